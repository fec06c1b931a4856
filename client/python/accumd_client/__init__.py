"""Python client of accumd's Control service (proto/accum.proto, package accum.v1).

The gRPC stubs are generated at build time into <build>/python (accum/v1/accum_pb2.py,
accum_pb2_grpc.py) with this package linked beside them, so

    PYTHONPATH=build/python python3 -c 'from accumd_client import Client'

works after a build. Needs Debian's python3-grpcio and python3-protobuf.
"""
from accumd_client.client import TERMINAL_STATES, Client
from accumd_client.errors import AccumdError, SpecError
from accumd_client.spec import load_spec, parse_spec

__all__ = ["AccumdError", "Client", "SpecError", "TERMINAL_STATES", "load_spec", "parse_spec"]
