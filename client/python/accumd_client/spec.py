"""Job specs as accum.v1.JobSpec, parsed the way accumd and accumctl parse them.

A spec is the proto's canonical JSON (snake_case or lowerCamelCase names; unknown
fields are refused by name). As in daemon/spec/spec.cpp parse_spec_json, a single
string where a list of paths is expected (data.train, data.val) becomes a
one-element list. Validation (ranges, defaults, presets) is the daemon's: SubmitJob
answers INVALID_ARGUMENT naming the field.
"""
import copy
import json

from google.protobuf import json_format

from accum.v1 import accum_pb2
from accumd_client.errors import SpecError

_PATH_LISTS = ("train", "val")

def parse_spec(spec):
    """Returns an accum_pb2.JobSpec from a dict, JSON text or a JobSpec (copied).

    Raises SpecError naming what is wrong.
    """
    if isinstance(spec, accum_pb2.JobSpec):
        result = accum_pb2.JobSpec()
        result.CopyFrom(spec)
        return result
    if isinstance(spec, (str, bytes)):
        try:
            spec = json.loads(spec)
        except ValueError as error:
            raise SpecError(f"job spec is not valid JSON: {error}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"job spec must be a JSON object, got {type(spec).__name__}")
    spec = copy.deepcopy(spec)
    data = spec.get("data")
    if isinstance(data, dict):
        for key in _PATH_LISTS:
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
    try:
        return json_format.ParseDict(spec, accum_pb2.JobSpec())
    except json_format.ParseError as error:
        raise SpecError(f"job spec is not valid JSON for accum.v1.JobSpec: {error}") from None


def load_spec(path):
    """Reads and parses a spec file (relative paths inside stay relative: the
    daemon resolves them against the spec_dir that Client.submit sends)."""
    with open(path, encoding="utf-8") as file:
        return parse_spec(file.read())
