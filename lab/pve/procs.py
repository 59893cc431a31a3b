"""Pid files and process control for lab.pve, in the format `lab` uses (.lab/pids/NAME.pid:
line 1 the pid, line 2 its start time from /proc, which guards against pid reuse), so that
`python -m lab down` finds and stops them too. Standard library only."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def _start_time(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()[19]


def alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2 :].split()[0] not in ("Z", "X")


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n{_start_time(pid) or ''}\n")
    tmp.replace(path)


def read_pid(path: Path) -> int | None:
    """The pid in PATH if that process still runs (and is the same process)."""
    try:
        lines = path.read_text().split()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if not alive(pid):
        return None
    if len(lines) > 1 and _start_time(pid) != lines[1]:
        return None
    return pid


def terminate(pids: list[int], deadline: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Send SIG to PIDS, SIGKILL what still runs after DEADLINE seconds."""
    targets = [p for p in pids if p != os.getpid() and alive(p)]
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    end = time.monotonic() + deadline
    while time.monotonic() < end and any(alive(p) for p in targets):
        time.sleep(0.05)
    for pid in targets:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while time.monotonic() < end and any(alive(p) for p in targets):
        time.sleep(0.05)


def stop_pidfile(path: Path, deadline: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    pid = read_pid(path)
    if pid is not None:
        terminate([pid], deadline, sig)
    path.unlink(missing_ok=True)
    return pid is not None
