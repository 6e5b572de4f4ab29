"""Query the local warehouse while the platform runs: `python scripts/query.py "SQL"`.

DuckDB lets one process write a file and nobody else open it meanwhile; the sync runs
hold it only while they write, so this waits for a free moment (up to `--wait` seconds),
opens the file read-only, prints the result and lets go at once.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_SQL = (
    "SELECT opportunity_name, amount, owner_name, account_name, close_date "
    "FROM marts.commission_preview ORDER BY last_modified_date DESC LIMIT 10"
)


def main(argv: list[str] | None = None) -> int:
    """Print the result of one SQL statement against the DuckDB warehouse."""
    from resources.duckdb_warehouse import DEFAULT_DUCKDB_PATH, connect_waiting
    from resources.environment import duckdb_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sql", nargs="?", default=DEFAULT_SQL, help="one SQL statement")
    parser.add_argument(
        "--db",
        default=duckdb_path(),
        help=f"the DuckDB file (default: $WAREHOUSE_DUCKDB_PATH or {DEFAULT_DUCKDB_PATH})",
    )
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the file")
    args = parser.parse_args(argv)
    if not os.path.exists(args.db):
        parser.error(f"{args.db} does not exist yet: start `make demo` and wait for a sync run")
    con = connect_waiting(args.db, args.wait, read_only=True)
    try:
        rel = con.sql(args.sql)
        if rel is None:
            return 0
        sys.stdout.write(f"{rel}\n")
    finally:
        con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
