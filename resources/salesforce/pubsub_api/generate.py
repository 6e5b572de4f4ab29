"""Regenerate the committed Python modules of the Pub/Sub API proto.

Run from anywhere: ``python -m resources.salesforce.pubsub_api.generate`` (``make proto``).
The proto is compiled with the repository root as the include path so that the generated
gRPC module imports the message module as ``resources.salesforce.pubsub_api.pubsub_api_pb2``
(an absolute, package-qualified import) instead of protoc's default top-level
``import pubsub_api_pb2``.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[2]
PROTO = PACKAGE_DIR / "pubsub_api.proto"


def generate() -> None:
    """Compile ``pubsub_api.proto`` into ``pubsub_api_pb2.py(i)`` and ``pubsub_api_pb2_grpc.py``."""
    from grpc_tools import protoc  # dev dependency: imported lazily so runtime needs no tools

    # The well-known-type protos ship inside grpc_tools; protoc needs them on the path.
    well_known = str(resources.files("grpc_tools") / "_proto")
    rel_proto = PROTO.relative_to(REPO_ROOT).as_posix()
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{well_known}",
        f"--python_out={REPO_ROOT}",
        # Type stubs for the message module, so mypy sees the message classes' fields.
        f"--pyi_out={REPO_ROOT}",
        f"--grpc_python_out={REPO_ROOT}",
        rel_proto,
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    generate()
    sys.exit(0)
