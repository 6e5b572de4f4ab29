"""The local instance's run launcher: each run in a new process, forked from a warm one.

Dagster's default launcher asks the code server to start a run, and the code server
starts a fresh interpreter for it (multiprocessing "spawn"), which imports Dagster,
dagster-dbt and dbt-core before the code location itself (~4 s of imports). A CDC
micro-batch pays that on every run, on the path whose target is seconds (docs/
performance.md: a run's start took 3.5 s at P50 on an idle demo, 6-12 s on 2 busy cores).

`PrewarmedRunLauncher` keeps one "zygote" process per code location that has imported
those libraries once and then only forks: each run is still its own process (a crash or
a leak ends with it), started in milliseconds, which imports the code location and
executes the run as `dagster api execute_run` would. The zygote must hold no threads
when it forks (a child inherits only the forking thread: a library's thread pool would
be missing in it and hang it), so it preloads only libraries that start none, checks it,
and is not used otherwise. Anything else it cannot do (another kind of code location, a
zygote that fails) falls back to Dagster's default launcher, with a warning.

A zygote serves the code it imported: when a preloaded module's file changes (a
`pip install -U`), the next launch starts a new zygote. The code location itself is
imported fresh by every run, as with the default launcher.

Dagster internals used (no public API exists for executing a run in a given process):
`dagster._cli.api._execute_run_command_body` (what `dagster api execute_run` runs) and
`dagster._utils.interrupts.capture_interrupts` (what the code server wraps it in).
tests/resources/test_run_launcher.py runs real runs through it, so a Dagster upgrade
that changes them fails there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import dagster as dg

# The run launcher's plug-in interface (dagster.yaml `run_launcher`) is not exported at the
# top level.
from dagster._core.launcher import (  # noqa: TID251
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._serdes import ConfigurableClass, ConfigurableClassData

log = logging.getLogger(__name__)

# What a zygote imports before it forks: the libraries every run of this code location
# imports, none of which starts a thread at import (polars, pyarrow and numpy do: they and
# the code location's own modules stay in the child). dagster-dbt's assets import
# dbt.graph, which imports networkx (~300 modules). Measured on 2 busy cores: ~3.2 s of
# imports preloaded, ~1.0 s left to each run.
DEFAULT_PRELOAD = (
    "dagster",
    "dagster._cli.api",
    "dagster._utils.interrupts",
    "dagster_dbt",
    "dbt.graph",
    "networkx",
    "duckdb",
    "tenacity",
)
# The run tag with the run worker's pid (terminate signals it).
PID_TAG = "sfdc/run_worker_pid"
# `python -m` this module is a zygote, and so is each run it forks (fork does not exec).
ZYGOTE_MODULE = "resources.run_launcher"
START_TIMEOUT_S = 120.0
FORK_TIMEOUT_S = 30.0


class ZygoteError(RuntimeError):
    """The zygote could not start or fork a run."""


def _threads() -> int:
    tasks = Path("/proc/self/task")
    return len(list(tasks.iterdir())) if tasks.is_dir() else threading.active_count()


def _module_files(names: Sequence[str]) -> dict[str, int]:
    """mtime (ns) of each preloaded module's file (an upgrade of its package rewrites it)."""
    out: dict[str, int] = {}
    for name in names:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            out[path] = os.stat(path).st_mtime_ns
    return out


class _Zygote:
    """A running zygote, spoken to in JSON lines over its stdin/stdout."""

    def __init__(self, executable: str, working_directory: str, preload: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            [executable, "-m", ZYGOTE_MODULE, working_directory, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        ready = self._reply(START_TIMEOUT_S)
        if not ready.get("ready"):
            self.stop()
            raise ZygoteError(f"the zygote did not start: {ready.get('error', 'no reason given')}")
        self.files: dict[str, int] = ready["files"]

    def _reply(self, timeout_s: float) -> dict[str, Any]:
        out = self.proc.stdout
        assert out is not None
        readable, _, _ = select.select([out], [], [], timeout_s)
        line = out.readline() if readable else b""
        if not line:
            self.stop()
            raise ZygoteError(f"the zygote did not answer within {timeout_s:.0f} s (or exited)")
        return json.loads(line)

    def stale(self) -> bool:
        """A preloaded module's file changed since the zygote imported it, or it exited."""
        if self.proc.poll() is not None:
            return True
        for path, mtime in self.files.items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False

    def fork(self, run_id: str, instance_ref: str) -> int:
        """Start `run_id` in a child of the zygote; its pid."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps({"run_id": run_id, "instance_ref": instance_ref}).encode())
            stdin.write(b"\n")
            stdin.flush()
        except OSError as exc:
            self.stop()
            raise ZygoteError(f"the zygote is gone: {exc}") from exc
        reply = self._reply(FORK_TIMEOUT_S)
        if "pid" not in reply:
            raise ZygoteError(f"the zygote could not fork: {reply.get('error')}")
        return int(reply["pid"])

    def stop(self) -> None:
        """End the zygote (its runs go on: they are separate processes)."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PrewarmedRunLauncher(RunLauncher, ConfigurableClass):
    """Runs in processes forked from a warm zygote per code location (module doc)."""

    def __init__(
        self, inst_data: ConfigurableClassData | None = None, preload: Sequence[str] = ()
    ) -> None:
        self._inst_data = inst_data
        self._preload = tuple(preload) or DEFAULT_PRELOAD
        self._fallback = dg.DefaultRunLauncher()
        self._zygotes: dict[tuple[str, str], _Zygote] = {}
        self._lock = threading.Lock()
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        """The dagster.yaml entry this launcher was built from."""
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        """`preload`: the modules a zygote imports (each must start no thread)."""
        return {"preload": dg.Field([str], is_required=False, default_value=list(DEFAULT_PRELOAD))}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> PrewarmedRunLauncher:
        """Build from dagster.yaml."""
        return cls(inst_data=inst_data, preload=config_value.get("preload", ()))

    def register_instance(self, instance: dg.DagsterInstance) -> None:
        """Both this launcher and its fallback belong to `instance`."""
        super().register_instance(instance)
        self._fallback.register_instance(instance)

    def _zygote(self, executable: str, working_directory: str) -> _Zygote:
        key = (executable, working_directory)
        zygote = self._zygotes.get(key)
        if zygote is not None and zygote.stale():
            zygote.stop()
            zygote = None
        if zygote is None:
            zygote = _Zygote(executable, working_directory, self._preload)
            self._zygotes[key] = zygote
        return zygote

    def launch_run(self, context: LaunchRunContext) -> None:
        """Fork the run from the zygote of its code location (else the default launcher)."""
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None:
            self._fallback.launch_run(context)
            return
        pointer = origin.repository_origin.code_pointer
        working_directory = getattr(pointer, "working_directory", None) or os.getcwd()
        try:
            with self._lock:
                zygote = self._zygote(origin.executable_path, working_directory)
                pid = zygote.fork(run.run_id, dg.serialize_value(self._instance.get_ref()))
        except ZygoteError as exc:
            log.warning("run %s: %s; launching it the default way", run.run_id, exc)
            self._fallback.launch_run(context)
            return
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(pid)})

    def terminate(self, run_id: str) -> bool:
        """Interrupt the run's worker, as Dagster's code server does (SIGINT)."""
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        pid = run.tags.get(PID_TAG)
        if pid is None:
            return self._fallback.terminate(run_id)
        self._instance.report_run_canceling(run)
        try:
            os.kill(int(pid), signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        """Run monitoring (dagster.yaml `run_monitoring`) may ask whether a worker lives."""
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """Whether the run's forked worker still runs. A run whose worker is gone (the stack
        was stopped or killed mid-run) stays STARTED for ever otherwise, and holds its
        object's run slot: every later run of that object queues behind it. Told
        NOT_FOUND, Dagster's monitoring daemon fails it (and run retries may rerun it)."""
        pid = run.tags.get(PID_TAG)
        if pid is None:  # launched the default way: not ours to judge
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not forked by this launcher")
        if _forked_worker_alive(int(pid)):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"run worker process {pid} is gone")

    def dispose(self) -> None:
        """Stop the zygotes."""
        with self._lock:
            for zygote in self._zygotes.values():
                zygote.stop()
            self._zygotes.clear()
        self._fallback.dispose()


def _forked_worker_alive(pid: int) -> bool:
    """A live process forked from a zygote (same command line: fork does not exec), so a
    pid the system has since given to another program does not count."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and ZYGOTE_MODULE in proc.cmdline()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # cannot tell: never fail a run on a guess
        return True


def _run_child(request: Mapping[str, Any]) -> int:
    """In the forked child: execute the run as `dagster api execute_run` does."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance.ref import InstanceRef  # noqa: TID251
    from dagster._utils.interrupts import capture_interrupts

    instance_ref = dg.deserialize_value(request["instance_ref"], InstanceRef)
    with capture_interrupts(), dg.DagsterInstance.from_ref(instance_ref) as instance:
        return _execute_run_command_body(
            request["run_id"],
            instance,
            write_stream_fn=lambda _: None,
            set_exit_code_on_failure=True,
        )


def _serve(working_directory: str, preload: Sequence[str], out: IO[bytes]) -> None:
    import importlib

    def say(message: Mapping[str, Any]) -> None:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()

    if working_directory not in sys.path:
        sys.path.insert(0, working_directory)
    for name in preload:
        importlib.import_module(name)
    threads = _threads()
    if threads != 1:
        say({"ready": False, "error": f"{threads} threads after preloading {list(preload)}"})
        return
    # Children are reaped by the kernel; a child restores the default at once, so its own
    # subprocesses (dbt) can be waited for. Ctrl-C of `dagster dev` reaches the whole
    # process group: the runs handle it as Dagster's own run workers do, the zygote ends
    # when the daemon does (its stdin closes).
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    say({"ready": True, "files": _module_files(preload)})
    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            pid = os.fork()
        except OSError as exc:
            say({"error": repr(exc)})
            continue
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            code = 1
            try:
                # The pipes are the zygote's: the run reads nothing and writes to stderr, and
                # holds no end of them (so the launcher sees EOF if the zygote dies).
                out.close()
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(2, 1)
                code = _run_child(request)
            except BaseException:  # a child must always reach os._exit
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        say({"pid": pid})


def main(argv: Sequence[str]) -> None:
    """`python -m resources.run_launcher WORKING_DIRECTORY MODULE...`: a zygote."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of the preloaded modules must not reach the pipe
    try:
        _serve(argv[0], argv[1:], out)
    except Exception as exc:  # reported to the launcher, which falls back
        out.write(json.dumps({"ready": False, "error": repr(exc)}).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
