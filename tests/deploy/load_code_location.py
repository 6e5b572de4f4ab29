"""Load the code location the way `dagster api grpc` does, with every socket refused.

Run as a script by tests/deploy (in the dev venv and in the clean production venv):
prints one JSON line with what loaded. Any attempt to resolve a name or open a
connection raises, so a code location that connects at load fails here.
"""

from __future__ import annotations

import json
import socket
import sys


class NetworkUsedAtLoadError(RuntimeError):
    """The code location tried to reach the network while loading."""


def _refuse(*args: object, **kwargs: object) -> None:
    raise NetworkUsedAtLoadError(f"network use while loading the code location: {args[:2]!r}")


def main() -> int:
    """Import sfdc_assets.definitions, resolve its repository, report."""
    socket.getaddrinfo = _refuse  # type: ignore[assignment]
    socket.create_connection = _refuse  # type: ignore[assignment]
    socket.socket.connect = _refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = _refuse  # type: ignore[method-assign,assignment]

    import sfdc_assets.definitions as location

    repo = location.defs.get_repository_def()
    report = {
        "assets": len(repo.asset_graph.get_all_asset_keys()),
        "sensors": len(repo.sensor_defs),
        "jobs": sorted(j.name for j in repo.get_all_jobs()),
        "warehouse": type(location.defs.resources["warehouse"]).__name__,
        "emulator_loaded": "sfdc_emulator" in sys.modules,
        "modules": sorted(
            m for m in ("starlette", "uvicorn", "trustme", "fakesnow", "duckdb") if m in sys.modules
        ),
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
