"""Processes for the benchmarks: functions under functions-framework, the stand-in, memory readings.

Everything is started through ``Stack.spawn`` (own process group, log under the
stack's workdir) and stopped by its pid through ``Child.stop()``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tagrelay_tools.localstack import PROCESS_START_SECONDS, Child, Stack, framework_argv

BENCH = Path(__file__).resolve().parent
HTTP_TIMEOUT = 30.0
FIRST_ANSWER_SECONDS = 60.0
POLL_SECONDS = 0.005


class BenchStack(Stack):
    """The local stack, able to start a function without waiting for it (for cold starts).

    ``start_ingest`` and ``start_relay`` keep composing the environment exactly as
    the stack does; inside ``no_wait()`` they return right after the process starts.
    """

    _no_wait: bool = False

    @contextlib.contextmanager
    def no_wait(self) -> Iterator[None]:
        self._no_wait = True
        try:
            yield
        finally:
            self._no_wait = False

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        ready_path: str | None,
        start_seconds: float = PROCESS_START_SECONDS,
        wait: bool = True,
    ) -> Child:
        return super().spawn(name, argv, env, ready_path, start_seconds, wait and not self._no_wait)


BASELINES: dict[str, tuple[Path, str, str]] = {
    "hello": (BENCH / "baselines" / "hello" / "main.py", "hello", "http"),
    "sync_ingest": (BENCH / "baselines" / "sync_ingest" / "main.py", "sync_ingest", "http"),
    "publish_only": (BENCH / "baselines" / "publish_only" / "main.py", "publish_only", "http"),
}


def start_baseline(stack: Stack, name: str, kind: str, extra: dict[str, str]) -> Child:
    """A baseline function (``hello``, ``sync_ingest``, ``publish_only``) under functions-framework, with their env."""
    source, target, signature = BASELINES[kind]
    return stack.spawn(name, framework_argv(source, target, signature), stack.function_env(extra), ready_path=None)


def start_standin(stack: Stack, name: str) -> Child:
    """Another Mailgun stand-in (same key and domain as the stack's), with its own outbox."""
    return stack.start_standin(name, stack.workdir / f"{name}-outbox")


def stop(stack: Stack, name: str) -> None:
    child = stack.children.pop(name, None)
    if child is not None:
        child.stop()


def worker_pid(child: Child | int, seconds: float = 10.0) -> int:
    """The gunicorn worker of a functions-framework process (the child's own child; a Child or a pid)."""
    pid = child if isinstance(child, int) else child.process.pid
    deadline = time.monotonic() + seconds
    path = Path(f"/proc/{pid}/task/{pid}/children")
    while time.monotonic() < deadline:
        pids = path.read_text().split() if path.exists() else []
        if pids:
            return int(pids[0])
        time.sleep(0.05)
    raise RuntimeError(f"process {pid} has no worker process")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and all its descendants, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


class CpuMeter:
    """CPU seconds used by some of the stack's processes between ``start()`` and ``stop()``."""

    def __init__(self, stack: Stack, names: Sequence[str]) -> None:
        self._pids = {name: stack.children[name].process.pid for name in names if name in stack.children}
        self._begin: dict[str, float] = {}
        self.used: dict[str, float] = {name: 0.0 for name in self._pids}

    def start(self) -> None:
        self._begin = {name: cpu_seconds(pid) for name, pid in self._pids.items()}

    def stop(self) -> None:
        for name, pid in self._pids.items():
            self.used[name] += cpu_seconds(pid) - self._begin[name]

    def per(self, count: int) -> dict[str, float]:
        """Milliseconds of CPU per item, by process."""
        return {name: round(used * 1000 / count, 2) if count else 0.0 for name, used in self.used.items()}


def describe_cpu(per_item: dict[str, float], unit: str) -> str:
    return ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(per_item.items(), key=lambda kv: -kv[1])) + (
        f" ms CPU per {unit}"
    )


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def first_ok(
    port: int, path: str, body_for: Callable[[], bytes], content_type: str, seconds: float = FIRST_ANSWER_SECONDS
) -> float:
    """Poll until the server answers 200; the monotonic time of that answer.

    ``body_for()`` builds each attempt's body (a fresh token for ingest). A refused
    connection is retried after a few milliseconds; any other answer is retried too.
    """
    deadline = time.monotonic() + seconds
    last = "no answer"
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
        try:
            body = body_for()
            connection.request("POST", path, body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                return time.monotonic()
            last = f"HTTP {response.status}"
        except (ConnectionRefusedError, http.client.RemoteDisconnected, ConnectionResetError) as exc:
            last = type(exc).__name__
        finally:
            connection.close()
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"no 200 on port {port} within {seconds:g}s (last: {last})")
