"""Job specs as accum.v1.JobSpec, parsed the way accumd and accumctl parse them.

A spec is the proto's canonical JSON (snake_case or lowerCamelCase names). As in
daemon/spec/spec.cpp parse_spec_json, a single string where a list of paths is
expected (data.train, data.val) becomes a one-element list, and the fields are
checked with daemon/spec/spec_json.cpp's rules and messages: an unknown field is
refused naming what its object has and the closest name, a value of the wrong kind
naming what was expected, a key given twice by name, and a 64-bit integer past 2^53
unless quoted. Validation (ranges, defaults, presets) is the daemon's: SubmitJob
answers INVALID_ARGUMENT naming the field.
"""
import copy
import json

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

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
            spec = json.loads(spec, object_pairs_hook=_JsonObject)
        except SpecError:
            raise
        except ValueError as error:
            raise SpecError(f"job spec is not valid JSON: {error}") from None
        except RecursionError:
            raise SpecError("job spec is nested too deeply; a spec has objects 3 levels deep") from None
    if not isinstance(spec, dict):
        raise SpecError(f"job spec must be a JSON object, got {type(spec).__name__}")
    _check_repeats(spec, "")
    spec = copy.deepcopy(spec)
    data = spec.get("data")
    if isinstance(data, dict):
        for key in _PATH_LISTS:
            if isinstance(data.get(key), str):
                data[key] = [data[key]]
    _check_fields(spec, accum_pb2.JobSpec.DESCRIPTOR, "")
    try:
        return json_format.ParseDict(spec, accum_pb2.JobSpec())
    except json_format.ParseError as error:
        raise SpecError(f"job spec is not valid JSON for accum.v1.JobSpec: {error}") from None


def load_spec(path):
    """Reads and parses a spec file (relative paths inside stay relative: the
    daemon resolves them against the spec_dir that Client.submit sends)."""
    with open(path, encoding="utf-8") as file:
        return parse_spec(file.read())


class _JsonObject(dict):
    """A JSON object that keeps its keys as written, a key given twice included."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = pairs


def _json_name(key):
    """protobuf's JSON name of a key: max_steps -> maxSteps."""
    out, i = "", 0
    while i < len(key):
        if key[i] == "_" and i + 1 < len(key):
            out += key[i + 1].upper()
            i += 2
        else:
            out += key[i]
            i += 1
    return out


def _check_repeats(value, path):
    """A key given twice in one object, also as max_steps and maxSteps, in document order,
    named as spec.cpp's check_duplicate_keys names it."""
    if isinstance(value, list):
        for item in value:
            _check_repeats(item, "")  # an object in a list starts a path of its own
    elif isinstance(value, dict):
        seen = set()
        for key, item in getattr(value, "pairs", None) or list(value.items()):
            field = f"{path}.{key}" if path else key
            if _json_name(key) in seen:
                raise _invalid(field, "given twice in one object; expected each field once")
            seen.add(_json_name(key))
            _check_repeats(item, field)


def _invalid(path, message):
    return SpecError(f"spec field `{path}`: {message}")


def _describe(value):
    """A JSON value as accumd's messages quote it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (int, float)):
        if float(value).is_integer() and abs(value) < 2**53:
            return str(int(value))
        return format(float(value), ".6g")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        diagonal, row[0] = row[0], i
        for j in range(1, len(b) + 1):
            above = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1]))
            diagonal = above
    return row[len(b)]


def _closest_field(descriptor, key):
    best, best_distance = "", max(2, len(key) // 3) + 1
    for field in descriptor.fields:
        distance = min(_edit_distance(key, field.name), _edit_distance(key, field.json_name))
        if len(field.name) >= 2 and len(key) >= 2 and (field.name in key or key in field.name):
            distance = min(distance, 1)
        if distance < best_distance:
            best, best_distance = field.name, distance
    return best


def _unknown_field(descriptor, path, key):
    names = ", ".join(field.name for field in descriptor.fields)
    owner = f"`{path}`" if path else "a spec"
    guess = _closest_field(descriptor, key)
    hint = f" (did you mean `{guess}`?)" if guess else ""
    return _invalid(f"{path}.{key}" if path else key, f"no such field; {owner} has {names}{hint}")


_INTEGER_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-2**31, 2**31 - 1, "[-2147483648, 2147483647]"),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1, "[0, 4294967295]"),
    FieldDescriptor.CPPTYPE_INT64: (-2**63, 2**63 - 1, "[-2^63, 2^63)"),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1, "[0, 2^64)"),
}


def _check_integer(field, path, value):
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value if isinstance(value, int) or value == int(value) else None
    elif isinstance(value, str):
        try:
            number = int(value, 10)
        except ValueError:
            number = None
    if number is None:
        raise _invalid(path, f"got {_describe(value)}, expected an integer")
    low, high, text = _INTEGER_RANGES[field.cpp_type]
    if not low <= number <= high:
        raise _invalid(path, f"got {_describe(value)}, expected an integer in {text}")
    if not isinstance(value, str) and abs(number) >= 2**53:
        name = path.rsplit(".", 1)[-1]
        raise _invalid(path, f"got {_describe(value)}, a number too large for JSON to keep exactly; "
                       f'expected it as a string ("{name}": "12345678901234567890")')


def _check_value(field, path, value, element=False):
    if value is None and not element:
        return  # not set
    if field.label == FieldDescriptor.LABEL_REPEATED and not element:
        if not isinstance(value, list):
            raise _invalid(path, f"got {_describe(value)}, expected a list")
        for i, item in enumerate(value):
            _check_value(field, f"{path}[{i}]", item, element=True)
        return

    def got(expected):
        return _invalid(path, f"got {_describe(value)}, expected {expected}")

    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        if not isinstance(value, dict):
            raise got("an object")
        _check_fields(value, field.message_type, path)
    elif kind == FieldDescriptor.CPPTYPE_STRING:
        if not isinstance(value, str):
            raise got("a string")
    elif kind == FieldDescriptor.CPPTYPE_BOOL:
        if not isinstance(value, bool):
            raise got("true or false, unquoted")
    elif kind == FieldDescriptor.CPPTYPE_ENUM:
        names = [v.name for v in field.enum_type.values]
        if isinstance(value, str) and value in names:
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value) \
                and abs(value) < 2**31:
            return
        raise got("one of " + ", ".join(names))
    elif kind in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if isinstance(value, str):
            try:
                float(value)
                return
            except ValueError:
                pass
        raise got("a number")
    else:
        _check_integer(field, path, value)


def _check_fields(obj, descriptor, path):
    # In name order, as spec_json.cpp reports the first error.
    for key in sorted(obj):
        field = descriptor.fields_by_name.get(key) or next(
            (f for f in descriptor.fields if f.json_name == key), None)
        if field is None:
            raise _unknown_field(descriptor, path, key)
        _check_value(field, f"{path}.{field.name}" if path else field.name, obj[key])
