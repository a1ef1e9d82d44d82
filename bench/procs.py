"""Server lifecycle and CPU accounting. CPU comes from /proc (utime+stime of the server and every
descendant), because per-request CPU is the figure the SPRIGHT paper argues with, and wall-clock
RPS alone hides a design that burns both cores to get it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from spright.transport.wire import loopback_ports as free_ports  # noqa: F401 (bench.run, bench.sweep)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, via /proc/<pid>/task/*/children (no psutil needed)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(child) for child in (task / "children").read_text().split())
    return found


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """utime+stime per process in seconds; a process that is gone is left out (it should not go)."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # the comm field may contain spaces
            found[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return found


def machine_busy_seconds() -> float:
    """CPU-seconds the whole machine spent not idle (all cores): minus the server's and wrk's share,
    what is left is other load (noise), and a machine far from busy means the server stalls."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


class Server:
    """One server under test: started in its own process group, stopped with SIGTERM, verified gone."""

    def __init__(self, argv: list[str], ports: list[int], log: Path, cwd: Path) -> None:
        self.argv, self.ports, self.log_path, self.cwd = argv, ports, log, cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        waiting = list(self.ports)  # every listening port: the aiohttp chain binds three
        while waiting and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5):
                waiting.pop(0)
                continue
            time.sleep(0.1)
        if waiting:
            self.stop()
            raise RuntimeError(f"server did not accept connections on :{waiting[0]} within {timeout:.0f}s")
        self.pids = descendants(self.process.pid)

    def stop(self, grace: float = 15.0) -> dict[str, object]:
        """SIGTERM, wait, then SIGKILL whatever is left; reports what it had to do."""
        if self.process is None:
            return {"clean": True}
        pids = self.pids or descendants(self.process.pid)
        pids = list(dict.fromkeys(pids + descendants(self.process.pid)))
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace)
        while time.monotonic() - started < grace and any(alive(p) for p in pids if p != self.process.pid):
            time.sleep(0.05)
        leftovers = [p for p in pids if alive(p)]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(5)
        return {
            "clean": not leftovers,
            "exit_code": self.process.returncode,
            "stop_seconds": round(time.monotonic() - started, 2),
            "killed": leftovers,
        }

    def cpu(self) -> dict[int, float]:
        return cpu_by_pid(self.pids)

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""
