"""Pid files and process control for lab.pve, in the format `lab` keeps in .lab/pids/ (so that
`python -m lab down` finds and stops them too): `lab`'s own helpers under the names lab.pve uses."""

from __future__ import annotations

from pathlib import Path

from lab import alive, kill_all, read_pid, write_pid

__all__ = ["alive", "read_pid", "stop_pidfile", "terminate", "write_pid"]


def terminate(pids: list[int], deadline: float = 10.0) -> None:
    """SIGTERM PIDS, SIGKILL what still runs after DEADLINE seconds."""
    kill_all(pids, deadline)


def stop_pidfile(path: Path, deadline: float = 10.0) -> bool:
    """Stop the process recorded in PATH and remove the file; True if it was running."""
    pid = read_pid(path)
    if pid is not None:
        terminate([pid], deadline)
    path.unlink(missing_ok=True)
    return pid is not None
