"""The one exception type of the client."""
import grpc


class AccumdError(Exception):
    """A refused or failed call: `code` is the grpc.StatusCode, `details` accumd's
    message (for INVALID_ARGUMENT it names the spec field, e.g. `optimizer.lr`)."""

    def __init__(self, code, details):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc_error(cls, error):
        return cls(error.code(), error.details() or "")


class SpecError(AccumdError, ValueError):
    """A spec that is not a JobSpec, refused before it reaches accumd. Its code is
    INVALID_ARGUMENT, as the daemon's would be."""

    def __init__(self, details):
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, details)
