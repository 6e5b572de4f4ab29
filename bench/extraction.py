"""Extraction benchmark: Bulk backfill throughput and memory, CDC decode throughput.

``python -m bench.extraction [--tasks 5000000] [--repeat 3] [--gzip both|on|off]`` starts the
emulator in a separate process (so this process's memory is the extraction's alone),
backfills the Task table end to end (Bulk 2.0 over HTTPS -> polars -> Parquet in a local
landing store) ``--repeat`` times with gzip result pages and without, alternating, while
sampling both processes' RSS, then makes CDC traffic and drains it over gRPC/TLS. Medians
go to ``docs/performance.md`` (its "## Extraction" section only), every run to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from bench.report import RssSampler, machine, replace_section
from resources.landing import LandingStore
from resources.salesforce.bulk import BulkOptions
from resources.salesforce.resource import SalesforceClient
from resources.salesforce.settings import SalesforceSettings

log = logging.getLogger("bench.extraction")

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Extraction (make bench-extraction)"


def start_emulator(state_dir: Path, tasks: int) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m sfdc_emulator serve`` in its own process; waits for the handshake."""
    info = state_dir / "bench-emulator.json"
    info.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "sfdc_emulator", "serve",
        "--state-dir", str(state_dir / "org"), "--scale", str(tasks),
        "--info-file", str(info), "--pubsub-tls",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO)
    deadline = time.monotonic() + 1800  # seeding 5M Tasks takes ~30 s; be generous
    while not info.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the emulator exited with {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("the emulator did not write its handshake")
        time.sleep(0.5)
    return proc, info


def bench_backfill(
    client: SalesforceClient, landing_dir: Path, page_size: int, gzip: bool, server_pid: int
) -> dict[str, Any]:
    """Backfill every Task row into Parquet; throughput, API calls, peak RSS of both sides."""
    shutil.rmtree(landing_dir, ignore_errors=True)
    landing = LandingStore(str(landing_dir))
    options = BulkOptions(page_size=page_size, lag=timedelta(0), gzip=gzip)
    reader = client.bulk(landing, options)
    describe = client.rest.describe("Task")
    api_before = client.governor.used["api"]
    now = datetime.now(UTC) + timedelta(seconds=5)  # no traffic: read everything
    load = os.getloadavg()[0]
    procs = (psutil.Process(), psutil.Process(server_pid))
    cpu_before = [sum(p.cpu_times()[:2]) for p in procs]
    server_rss_before = procs[1].memory_info().rss
    with RssSampler((server_pid,)) as rss:
        started = time.perf_counter()
        result = reader.backfill(
            "Task", datetime(2000, 1, 1, tzinfo=UTC), now, describe=describe, now=now
        )
        seconds = time.perf_counter() - started
    cpu = [sum(p.cpu_times()[:2]) - b for p, b in zip(procs, cpu_before, strict=True)]
    api = client.governor.used["api"] - api_before
    parquet_bytes = sum(p.bytes for m in result.manifests for p in m.parts)
    shutil.rmtree(landing_dir, ignore_errors=True)
    return {
        "gzip": gzip,
        "rows": result.rows,
        "seconds": seconds,
        "rows_per_s": result.rows / seconds,
        "bulk_jobs": len(result.jobs),
        "api_calls": api,
        "api_calls_per_million_rows": api / max(result.rows, 1) * 1e6,
        "parts": sum(len(m.parts) for m in result.manifests),
        "parquet_mb": parquet_bytes / 2**20,
        "client_peak_rss_mb": rss.peak[0] / 2**20,
        "server_peak_rss_mb": rss.peak[1] / 2**20,
        # The emulator holds the seeded org in DuckDB's buffer pool before any job runs.
        "server_rss_before_mb": server_rss_before / 2**20,
        "page_size": page_size,
        "load_at_start": load,
        # CPU seconds (user + system, all threads) per million rows: what two processes
        # sharing 2 CPUs actually compete for.
        "client_cpu_s_per_m": cpu[0] / max(result.rows, 1) * 1e6,
        "server_cpu_s_per_m": cpu[1] / max(result.rows, 1) * 1e6,
        "stage_seconds": dict(result.timings),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs of one mode (max for memory: the bound is what matters)."""

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    order = ["wait", "download", "parse", "write"]
    seen = {k for r in runs for k in r["stage_seconds"]}
    stages = [k for k in order if k in seen] + sorted(seen - set(order))
    return {
        "runs": len(runs),
        "rows": runs[0]["rows"],
        "seconds": med("seconds"),
        "rows_per_s": med("rows_per_s"),
        "rows_per_s_all": [round(r["rows_per_s"]) for r in runs],
        "bulk_jobs": runs[0]["bulk_jobs"],
        "api_calls": med("api_calls"),
        "api_calls_per_million_rows": med("api_calls_per_million_rows"),
        "parts": runs[0]["parts"],
        "parquet_mb": med("parquet_mb"),
        "client_peak_rss_mb": max(r["client_peak_rss_mb"] for r in runs),
        "server_peak_rss_mb": max(r["server_peak_rss_mb"] for r in runs),
        "server_rss_before_mb": min(r["server_rss_before_mb"] for r in runs),
        "page_size": runs[0]["page_size"],
        "client_cpu_s_per_m": med("client_cpu_s_per_m"),
        "server_cpu_s_per_m": med("server_cpu_s_per_m"),
        "stage_seconds": {
            k: statistics.median(r["stage_seconds"].get(k, 0.0) for r in runs) for k in stages
        },
    }


def bench_cdc(client: SalesforceClient, info: dict[str, Any], events: int) -> dict[str, Any]:
    """Commit ``events`` distinct Opportunity updates, then drain and decode them."""
    from sfdc_emulator.admin import admin_call

    topic = "/data/OpportunityChangeEvent"
    soql = f"SELECT Id FROM Opportunity WHERE IsDeleted = false LIMIT {int(events)}"
    ids = [r["Id"] for r in client.rest.query_all(soql)]
    first_replay: int | None = None
    # Distinct values per record, so each update is its own event (identical updates in
    # one transaction would be merged into one multi-record event).
    for start in range(0, events, 500):
        mutations = [
            {
                "op": "update",
                "object": "Opportunity",
                "id": ids[i % len(ids)],
                "values": {"Description": f"bench {i}", "Amount": 1000 + i},
            }
            for i in range(start, min(start + 500, events))
        ]
        made = admin_call(dict(info), "commit", mutations=mutations)
        if first_replay is None and made["replay_ids"]:
            first_replay = int(made["replay_ids"][0]) - 1
    if first_replay is None:
        raise RuntimeError("the emulator reported no CDC events for the benchmark updates")
    cursor: bytes = first_replay.to_bytes(8, "big")  # emulator replay ids: 8-byte BE
    client.pubsub.idle_s = 1.0
    total, rows, seconds, decode = 0, 0, 0.0, 0.0
    while True:
        res = client.pubsub.drain(topic, cursor, max_events=10_000, max_seconds=120)
        if res.stopped_by is not None:
            # A budget-stopped drain returns early: that would be measured as caught up.
            raise RuntimeError(f"CDC benchmark drain cut short: {res.stopped_by}")
        total += res.events
        rows += len(res.rows)
        decode += res.decode_seconds
        # A drain that catches up ends with one idle wait; that is not decode time.
        seconds += res.seconds - (client.pubsub.idle_s if res.events < 10_000 else 0)
        cursor = res.replay_id or cursor
        if res.events < 10_000:
            break
    return {
        "events": total,
        "change_rows": rows,
        "seconds": round(seconds, 2),
        "events_per_s": round(total / max(seconds, 1e-9)),
        "decode_only_events_per_s": round(total / max(decode, 1e-9)),
        "schema_fetches": client.pubsub.schema_fetches,
    }


def write_section(results: dict[str, Any], command: str) -> None:
    """Replace (or append) only this benchmark's section of docs/performance.md."""
    modes = results["backfill"]
    c = results["cdc"]
    cols = [m for m in ("off", "on") if m in modes]
    title = {"off": "gzip off", "on": "gzip on (production default)"}

    def row(label: str, fn: Any) -> str:
        return f"| {label} | " + " | ".join(fn(modes[m]) for m in cols) + " |"

    def stages(b: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in b["stage_seconds"].items())

    first = modes[cols[0]]
    table = "\n".join(
        [
            "| measure (median of runs) | " + " | ".join(title[m] for m in cols) + " |",
            "|---|" + "---|" * len(cols),
            row("Task rows backfilled", lambda b: f"{b['rows']:,} in {b['seconds']:.1f} s"),
            row("backfill throughput, end to end", lambda b: f"**{b['rows_per_s']:,.0f} rows/s**"),
            row("every run (rows/s)", lambda b: ", ".join(f"{v:,}" for v in b["rows_per_s_all"])),
            row(
                "peak RSS: extraction / emulator process (emulator before the run)",
                lambda b: (
                    f"**{b['client_peak_rss_mb']:.0f} MB** / {b['server_peak_rss_mb']:.0f} MB "
                    f"({b['server_rss_before_mb']:.0f} MB)"
                ),
            ),
            row("time by stage (s)", stages),
            row(
                "CPU s per million rows: extraction / emulator",
                lambda b: f"{b['client_cpu_s_per_m']:.2f} / {b['server_cpu_s_per_m']:.2f}",
            ),
            row("Bulk jobs / API calls", lambda b: f"{b['bulk_jobs']} / {b['api_calls']:.0f}"),
            row("API calls per million rows", lambda b: f"{b['api_calls_per_million_rows']:.1f}"),
            row("landed Parquet", lambda b: f"{b['parts']} parts, {b['parquet_mb']:.1f} MB"),
        ]
    )
    cdc = f"{c['events']:,} ({c['change_rows']:,} change rows) in {c['seconds']} s"
    off = modes.get("off", first)
    cpu_off = (
        f"{off['client_cpu_s_per_m']:.2f} + {off['server_cpu_s_per_m']:.2f} CPU-seconds per "
        f"million rows (extraction + emulator, gzip {'off' if 'off' in modes else 'on'}), "
        f"i.e. at most {2e6 / (off['client_cpu_s_per_m'] + off['server_cpu_s_per_m']):,.0f} "
        "rows/s if both CPUs were ours and never idle"
    )
    alone = 2e6 / off["client_cpu_s_per_m"]
    if "on" in modes and "off" in modes:
        on = modes["on"]
        gzip_cost = (
            f"+{on['server_cpu_s_per_m'] - off['server_cpu_s_per_m']:.2f} CPU-s per million "
            f"rows in the emulator (zlib level 1 compressing) and "
            f"+{on['client_cpu_s_per_m'] - off['client_cpu_s_per_m']:.2f} in the extraction "
            "(inflating), for CSV that is ~5x smaller on a wire that costs nothing here"
        )
    else:
        gzip_cost = "run with `--gzip both` to see its cost"
    body = f"""
Measured by `{command}` ({results["machine"]}; 1-min load {results["load_average_at_end"]}
at the end). Both processes share the 2 CPUs with each other and with other work on the
box, so throughput follows the load; memory and API calls do not. The emulator runs in its
own process. Path: Bulk 2.0 queryAll over HTTPS -> CSV pages of {first["page_size"]:,}
rows -> polars (typed from describe) -> zstd Parquet parts in a local landing store.
Gzip on and off alternate within one run, {first["runs"]} runs each.

{table}

| CDC | value |
|---|---|
| CDC events drained and decoded | {cdc} |
| CDC throughput, drained over gRPC/TLS and decoded | **{c["events_per_s"]:,} events/s** |
| CDC decode alone (Avro + bitmaps + explode) | {c["decode_only_events_per_s"]:,} events/s |

Reading it: "wait" is the first job's query (the next job is created as soon as the
current one is complete, so later jobs are done when their turn comes); "download" is only
the time the parser waited for a page (pages are fetched one ahead in a background thread:
sockets, TLS and zlib release the GIL); "parse" (polars CSV read with every column as
text and empty = null, then vectorised casts; datetimes through Arrow's ISO 8601 parser)
and "write" (zstd Parquet, sha256) run on the main thread while the next page downloads.
The CPU row is what the two processes compete for on 2 CPUs: {cpu_off}. Against a real
org (which runs the query and the compression on its own machines) the extraction's own
CPU would cap it near {alone:,.0f} rows/s on 2 CPUs: a ceiling, not a measurement; the
network and the org's query time would set the pace there.

Gzip is the production default (`BulkOptions.gzip`; the org's network is the bottleneck
there). On loopback it only moves CPU: {gzip_cost}. Memory is bounded by the page size,
not the table: at most the page being typed, one downloaded page and one in flight. The
emulator's RSS is mostly the seeded org in DuckDB's buffer pool (before the run, in
brackets). API calls per million rows are dominated by result pages (1 per
{first["page_size"]:,} rows) plus a constant per job (create, status polls, COUNT() and
Id-range queries for keyset splitting). End-to-end CDC is bounded by the stream
(Salesforce's flow control allows 100 outstanding events; the emulator serves a
subscription from one Python gRPC thread), not by decoding.
"""
    replace_section(SECTION, body)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5_000_000)
    parser.add_argument("--page-size", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gzip", choices=("both", "on", "off"), default="both")
    parser.add_argument("--cdc-events", type=int, default=20_000)
    parser.add_argument("--workdir", default=str(REPO / "bench" / "out" / "extraction"))
    parser.add_argument("--no-docs", action="store_true", help="do not touch performance.md")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("resources.salesforce").setLevel(logging.WARNING)
    workdir = Path(ns.workdir) / f"tasks-{ns.tasks}"
    workdir.mkdir(parents=True, exist_ok=True)
    header = machine()
    modes = {"both": ["off", "on"], "on": ["on"], "off": ["off"]}[ns.gzip]
    proc, info_path = start_emulator(workdir, ns.tasks)
    try:
        info = json.loads(info_path.read_text())
        env = {"SFDC_ENV": "local", "SFDC_EMULATOR_INFO": str(info_path)}
        settings = SalesforceSettings.from_env(env).model_copy(
            update={"api_budget_pct": 100.0, "api_budget_run_pct": 100.0}
        )
        client = SalesforceClient(settings)
        client.rest.limits()
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for i in range(ns.repeat):
            for mode in modes:
                run = bench_backfill(
                    client, workdir / "landing", ns.page_size, mode == "on", proc.pid
                )
                runs[mode].append(run)
                log.info(
                    "run %d gzip %s: %.0f rows/s in %.1f s, stages %s, RSS %.0f/%.0f MB, "
                    "CPU s/M rows %.2f/%.2f",
                    i + 1,
                    mode,
                    run["rows_per_s"],
                    run["seconds"],
                    {k: round(v, 1) for k, v in run["stage_seconds"].items()},
                    run["client_peak_rss_mb"],
                    run["server_peak_rss_mb"],
                    run["client_cpu_s_per_m"],
                    run["server_cpu_s_per_m"],
                )
        results = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": header,
            "cpus": os.cpu_count(),
            "backfill": {m: summarize(r) for m, r in runs.items()},
            "backfill_runs": runs,
            "cdc": bench_cdc(client, info, ns.cdc_events),
            "governor": client.governor.snapshot(),
            "load_average_at_end": round(os.getloadavg()[0], 2),
        }
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    log.info("results: %s", json.dumps(results["backfill"], default=str))
    if not ns.no_docs:
        args = sys.argv[1:] if argv is None else argv
        command = " ".join(["python -m bench.extraction", *args])
        write_section(results, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
