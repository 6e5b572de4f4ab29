"""Command line of the Salesforce emulator: ``serve``, ``admin``, ``truth``.

    sfdc-emulator serve --state-dir DIR [--scale tiny|small|medium|N] [--seed N]
                        [--traffic RATE] [--info-file PATH] [--port N] [--hostname NAME]...
                        [--delivery-limit N] [--count OBJECT=N]... [--traffic-object OBJECT=W]...
    sfdc-emulator admin --info-file PATH <command> [args...]
    sfdc-emulator truth --state-dir DIR --object OBJ --out FILE.parquet

``admin`` commands mirror ``sfdc_emulator.admin`` (see docs/emulator.md): positional words
become ``object`` / ``field`` / ``type`` / ``target`` / ``status`` / ``duration`` and
``--name value`` options become arguments, e.g.
``admin --info-file .demo/emulator.json update Opportunity --count 100``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sfdc_emulator.faults import DEFAULT_DELIVERY_LIMIT, DELIVERY_LIMIT_ENV

log = logging.getLogger("sfdc_emulator")

HANDSHAKE_NAME = "emulator.json"

# Which argument name each positional word takes, per admin command.
_POSITIONAL: dict[str, tuple[str, ...]] = {
    "update": ("object",),
    "delete": ("object",),
    "undelete": ("object",),
    "purge": ("object",),
    "touch": ("object",),
    "overflow": ("object",),
    "gap": ("object",),
    "add-field": ("object", "field", "type"),
    "remove-field": ("object", "field"),
    "set-picklist": ("object", "field"),
    "fail": ("target", "status"),
    "slow": ("target", "seconds"),
    "advance-clock": ("duration",),
    "truth": ("object", "out"),
}


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of events, got {value!r}")
    return n


def _scale(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def assignment(kind: type[int] | type[float]) -> Callable[[str], tuple[str, float]]:
    """`Object=number` options (`--count Task=10000000`, `--traffic-object Task=0.7`)."""

    def parse(text: str) -> tuple[str, float]:
        name, sep, value = text.partition("=")
        try:
            if not sep or not name.isidentifier():
                raise ValueError
            return name, kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected Object={kind.__name__}, e.g. Task=1000; got {text!r}"
            ) from None

    return parse


def _parse_value(text: str) -> Any:
    """Admin option values: JSON where it parses (numbers, lists, true), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def admin_arguments(command: str, words: list[str]) -> dict[str, Any]:
    """Turn ``Opportunity --count 100 --values a,b`` into the admin call's arguments."""
    args: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            key = word[2:].replace("-", "_")
            if "=" in key:
                key, value = key.split("=", 1)
                args[key] = _parse_value(value)
            elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                args[key] = _parse_value(words[i + 1])
                i += 1
            else:
                args[key] = True
        else:
            positional.append(word)
        i += 1
    names = _POSITIONAL.get(command, ())
    if len(positional) > len(names):
        raise SystemExit(
            f"admin {command}: unexpected argument(s) {positional[len(names) :]}; "
            f"expected positional {list(names) or 'none'}"
        )
    for name, word in zip(names, positional, strict=False):
        args[name] = (
            word if name in ("object", "field", "type", "target", "out") else (_parse_value(word))
        )
    if command == "fail" and args.get("target") == "limit" and "status" in args:
        # `fail limit daily|concurrent|deliveries|bulk-jobs|bulk-mb`
        args["kind"] = str(args.pop("status"))
    if command == "set-picklist" and isinstance(args.get("values"), str):
        args["values"] = [v for v in args["values"].split(",") if v]
    return args


def _serve(ns: argparse.Namespace) -> int:
    from sfdc_emulator.server import EmulatorServer

    server = EmulatorServer(
        ns.state_dir,
        scale=_scale(ns.scale),
        seed=ns.seed,
        traffic=ns.traffic,
        host=ns.host,
        http_port=ns.port,
        pubsub_port=ns.pubsub_port,
        hostnames=ns.hostname,
        pubsub_tls=ns.pubsub_tls,
        delivery_limit=ns.delivery_limit,
        counts={k: int(v) for k, v in ns.count},
        traffic_objects=dict(ns.traffic_object),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    try:
        server.write_info(Path(ns.state_dir) / HANDSHAKE_NAME)
        if ns.info_file:
            server.write_info(ns.info_file)
        log.info("REST/Bulk/OAuth: %s", server.info["instance_url"])
        log.info("Pub/Sub (gRPC):  %s (tls=%s)", server.info["pubsub_target"], ns.pubsub_tls)
        log.info("handshake:       %s", ns.info_file or Path(ns.state_dir) / HANDSHAKE_NAME)
        log.info("CDC deliveries:  %s events per rolling 24 h", ns.delivery_limit)
        log.info("traffic:         %s changes/s; Ctrl-C stops", ns.traffic)
        stop.wait()
    finally:
        server.stop()
    return 0


def _admin(ns: argparse.Namespace) -> int:
    from sfdc_emulator.admin import admin_call

    info = json.loads(Path(ns.info_file).read_text())
    args = admin_arguments(ns.command, ns.words)
    try:
        result = admin_call(info, ns.command, **args)
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    return 0


def _truth(ns: argparse.Namespace) -> int:
    """Ground truth from the state dir: directly when no server holds it, else via admin."""
    import duckdb

    state_dir = Path(ns.state_dir)
    out = Path(ns.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    handshake = state_dir / HANDSHAKE_NAME
    try:
        from sfdc_emulator.store import OrgStore

        store = OrgStore(state_dir)
    except duckdb.IOException:
        # A running server holds the DuckDB file; it writes the truth for us.
        if not handshake.exists():
            log.error("the org in %s is locked and has no handshake to ask the server", state_dir)
            return 1
        from sfdc_emulator.admin import admin_call

        result = admin_call(
            json.loads(handshake.read_text()), "truth", object=ns.object, out=str(out)
        )
        log.info("wrote %s rows of %s to %s", result["rows"], ns.object, out)
        return 0
    try:
        import pyarrow.parquet as pq

        table = store.truth(ns.object)
        pq.write_table(table, out)
        log.info("wrote %s rows of %s to %s", table.num_rows, ns.object, out)
    finally:
        store.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="sfdc-emulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    serve = sub.add_parser("serve", help="run a local org until stopped")
    serve.add_argument("--state-dir", required=True, help="the org's files (created if new)")
    serve.add_argument("--scale", default="tiny", help="tiny | small | medium | N Tasks")
    serve.add_argument(
        "--count",
        action="append",
        default=[],
        type=assignment(int),
        metavar="OBJECT=N",
        help="seed N rows of OBJECT instead of the scale's (repeatable; a new org only)",
    )
    serve.add_argument("--seed", type=int, default=7)
    serve.add_argument("--traffic", type=float, default=0.0, help="live changes per second")
    serve.add_argument(
        "--traffic-object",
        action="append",
        default=[],
        type=assignment(float),
        metavar="OBJECT=WEIGHT",
        help="the traffic's object weights (repeatable; given ones replace the default mix)",
    )
    serve.add_argument("--info-file", help="also write the JSON handshake here")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="HTTPS port (0 = any free)")
    serve.add_argument("--pubsub-port", type=int, default=0, help="gRPC port (0 = any free)")
    serve.add_argument("--pubsub-tls", action="store_true", help="serve gRPC over TLS")
    serve.add_argument(
        "--hostname",
        action="append",
        default=[],
        help="extra name in the server certificate (repeatable)",
    )
    serve.add_argument(
        "--delivery-limit",
        type=_positive_int,
        # A string default goes through `type` too: a bad variable is a usage error.
        default=os.environ.get(DELIVERY_LIMIT_ENV) or str(DEFAULT_DELIVERY_LIMIT),
        help=(
            "CDC events delivered per rolling 24 h of org time (DailyDeliveredPlatformEvents; "
            f"default ${DELIVERY_LIMIT_ENV} or {DEFAULT_DELIVERY_LIMIT}: Unlimited Edition; "
            "Enterprise is 25000)"
        ),
    )
    serve.set_defaults(func=_serve)

    admin = sub.add_parser("admin", help="drive traffic, faults and the clock of a running org")
    admin.add_argument("--info-file", required=True, help="the running org's handshake")
    admin.add_argument("command", help="update, delete, add-field, fail, advance-clock, …")
    admin.add_argument("words", nargs=argparse.REMAINDER, help="command arguments")
    admin.set_defaults(func=_admin)

    truth = sub.add_parser("truth", help="write the org's ground truth for one object")
    truth.add_argument("--state-dir", required=True)
    truth.add_argument("--object", required=True)
    truth.add_argument("--out", required=True, help="Parquet file to write")
    truth.set_defaults(func=_truth)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sfdc-emulator`` and ``python -m sfdc_emulator``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ns = build_parser().parse_args(argv)
    return int(ns.func(ns))
