"""Extraction benchmark: Bulk backfill throughput and memory, CDC decode throughput.

``python -m bench.extraction [--tasks 5000000]`` starts the emulator in a separate process
(so this process's memory is the extraction's alone), backfills the Task table end to end
(Bulk 2.0 over HTTPS -> polars -> Parquet in a local landing store) while sampling this
process's RSS, then makes CDC traffic and drains it over gRPC/TLS. Results go to
``docs/performance.md`` (its "## Extraction" section only) and to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from resources.landing import LandingStore
from resources.salesforce.bulk import BulkOptions
from resources.salesforce.resource import SalesforceClient
from resources.salesforce.settings import SalesforceSettings

log = logging.getLogger("bench.extraction")

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Extraction (make bench-extraction)"
DOC = REPO / "docs" / "performance.md"


class RssSampler:
    """Peak resident set size of this process, sampled every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


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


def bench_backfill(client: SalesforceClient, landing_dir: Path, page_size: int) -> dict[str, Any]:
    """Backfill every Task row into Parquet; throughput, API calls, peak RSS."""
    shutil.rmtree(landing_dir, ignore_errors=True)
    landing = LandingStore(str(landing_dir))
    reader = client.bulk(landing, BulkOptions(page_size=page_size, lag=timedelta(0)))
    describe = client.rest.describe("Task")
    api_before = client.governor.used["api"]
    now = datetime.now(UTC) + timedelta(seconds=5)  # no traffic: read everything
    with RssSampler() as rss:
        started = time.perf_counter()
        result = reader.backfill(
            "Task", datetime(2000, 1, 1, tzinfo=UTC), now, describe=describe, now=now
        )
        seconds = time.perf_counter() - started
    api = client.governor.used["api"] - api_before
    parquet_bytes = sum(p.bytes for m in result.manifests for p in m.parts)
    return {
        "rows": result.rows,
        "seconds": round(seconds, 1),
        "rows_per_s": round(result.rows / seconds),
        "bulk_jobs": len(result.jobs),
        "api_calls": api,
        "api_calls_per_million_rows": round(api / max(result.rows, 1) * 1e6, 1),
        "parts": sum(len(m.parts) for m in result.manifests),
        "parquet_mb": round(parquet_bytes / 2**20, 1),
        "peak_rss_mb_sampled": round(rss.peak / 2**20),
        "peak_rss_mb_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "page_size": page_size,
        "stage_seconds": {k: round(v, 1) for k, v in result.timings.items()},
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
    b, c = results["backfill"], results["cdc"]
    rss = f"**{b['peak_rss_mb_sampled']} MB** sampled (ru_maxrss {b['peak_rss_mb_process']} MB)"
    cdc = f"{c['events']:,} ({c['change_rows']:,} change rows) in {c['seconds']} s"
    stages = ", ".join(f"{k} {v}" for k, v in b["stage_seconds"].items())
    body = f"""{SECTION}

Measured by `{command}` on {results["date"]} ({results["cpus"]} CPUs shared with the
emulator and other work: 1-min load average {results["load_average_at_start"]} at start,
{results["load_average_at_end"]} at the end; throughput varies with that load, memory
and API calls do not). The emulator runs in its own process; memory is the
extraction process's alone. Path: Bulk 2.0 queryAll over
HTTPS -> CSV pages of {b["page_size"]:,} rows -> polars (typed from describe) -> zstd
Parquet parts in a local landing store, and CDC over gRPC/TLS -> fastavro -> change rows.

| measure | value |
|---|---|
| Task rows backfilled | {b["rows"]:,} in {b["seconds"]} s |
| backfill throughput, end to end | **{b["rows_per_s"]:,} rows/s** |
| peak RSS of the extraction process | {rss} |
| Bulk jobs / API calls | {b["bulk_jobs"]} / {b["api_calls"]} |
| API calls per million rows | **{b["api_calls_per_million_rows"]}** |
| landed Parquet | {b["parts"]} parts, {b["parquet_mb"]} MB |
| time by stage (s) | {stages} |
| CDC events drained and decoded | {cdc} |
| CDC throughput, drained over gRPC/TLS and decoded | **{c["events_per_s"]:,} events/s** |
| CDC decode alone (Avro + bitmaps + explode) | {c["decode_only_events_per_s"]:,} events/s |

Memory is bounded by the page size, not the table: each page is streamed to a temporary
file, read, typed, written as one Parquet part and dropped. API calls per million rows
are dominated by result pages (1 per {b["page_size"]:,} rows) plus a constant per job
(create, status polls, COUNT() and Id-range queries for keyset splitting). The next
job is created before the current one is downloaded, so the org's query time overlaps
our download ("wait" above is only what was left). End-to-end CDC is bounded by the
stream (Salesforce's flow control allows 100 outstanding events; the emulator serves a
subscription from one Python gRPC thread), not by decoding.
"""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + ("\n" + text[nxt + 1 :] if nxt != -1 else "")
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5_000_000)
    parser.add_argument("--page-size", type=int, default=50_000)
    parser.add_argument("--cdc-events", type=int, default=20_000)
    parser.add_argument("--workdir", default=str(REPO / "bench" / "out" / "extraction"))
    parser.add_argument("--no-docs", action="store_true", help="do not touch performance.md")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    workdir = Path(ns.workdir) / f"tasks-{ns.tasks}"
    workdir.mkdir(parents=True, exist_ok=True)
    proc, info_path = start_emulator(workdir, ns.tasks)
    try:
        info = json.loads(info_path.read_text())
        env = {"SFDC_ENV": "local", "SFDC_EMULATOR_INFO": str(info_path)}
        settings = SalesforceSettings.from_env(env).model_copy(
            update={"api_budget_pct": 100.0, "api_budget_run_pct": 100.0}
        )
        client = SalesforceClient(settings)
        client.rest.limits()
        results = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "load_average_at_start": round(os.getloadavg()[0], 2),
            "backfill": bench_backfill(client, workdir / "landing", ns.page_size),
            "cdc": bench_cdc(client, info, ns.cdc_events),
            "governor": client.governor.snapshot(),
            "load_average_at_end": round(os.getloadavg()[0], 2),
        }
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    log.info("results: %s", json.dumps(results, default=str))
    if not ns.no_docs:
        command = "python -m bench.extraction" + (
            f" --tasks {ns.tasks}" if ns.tasks != 5_000_000 else ""
        )
        write_section(results, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
