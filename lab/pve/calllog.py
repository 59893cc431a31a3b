"""The lab's record of every API call it served: `<state>/pve/calls.log`, one JSON object a line.

Written by the server (router.py), read by `lab.pve.calls()` / `lab.pve.unmodelled()` and the
integration tests. Stdlib only: the test side imports it without aiohttp or fakepve.

A line: {"t": <epoch>, "node": <node whose address took the call>, "method", "path" (as sent,
percent-encoded, no query), "query" (the query's parameter NAMES, never values), "status",
"kind", "ua" (the client's User-Agent: the proxmoxve plugin is Go-http-client/1.1, proxmoxer
python-requests/...), "ms", and for an error "msg" (its first line, cephx keys masked)}.

Never a secret: no query or body values, no Authorization or Cookie header, keys masked in
messages (the project's secrets audit reads .lab logs).

`kind` says whose answer it was:
    pve         an answer as PVE gives it (success or one of PVE's errors)
    unmodelled  501 "Method '...' not implemented" for a method PVE's API schema has and the
                lab does not model: a real PVE would have answered something else
    lab-fault   500 from an exception inside the lab: a bug in the lab, not a PVE answer
    injected    a failure or hang asked for through the control channel
    down        the node is powered off or isolated: the connection was dropped
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

PVE, UNMODELLED, LAB_FAULT, INJECTED, DOWN = "pve", "unmodelled", "lab-fault", "injected", "down"
KINDS = (PVE, UNMODELLED, LAB_FAULT, INJECTED, DOWN)
# What a test of a client's whole run must not meet: answers that are not PVE's.
NOT_PVE = (UNMODELLED, LAB_FAULT)

# A cephx key (base64 of 28 bytes: 40 characters ending in '=='), and `key = ...` keyring lines.
_CEPHX = re.compile(r"[A-Za-z0-9+/]{38}==")
_KEY_LINE = re.compile(r"(key\s*=\s*)\S+")


def mask(text: str) -> str:
    """TEXT with anything that looks like a cephx key replaced by ***."""
    return _CEPHX.sub("***", _KEY_LINE.sub(r"\1***", text))


class CallLog:
    """Appends one line per call; each line is one write() on an O_APPEND file (no interleaving)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, entry: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def entry(
    *, node: str | None, method: str, path: str, query: list[str], status: int, kind: str, ua: str, started: float, msg: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "t": round(started, 3),
        "node": node,
        "method": method,
        "path": path,
        "query": sorted(set(query)),
        "status": status,
        "kind": kind,
        "ua": ua,
        "ms": round((time.time() - started) * 1000, 1),
    }
    if msg and status >= 400:
        out["msg"] = mask(msg.strip().splitlines()[0] if msg.strip() else "")[:300]
    return out


_STAMP = '{"t":'  # every line starts so (entry() puts "t" first, CallLog writes it compact)


def _older(line: str, since: float) -> bool:
    try:
        return float(line[len(_STAMP) : line.index(",")]) < since
    except ValueError:
        return False  # not a line of ours: json.loads judges it


def read(path: Path, since: float | None = None, agent: str | None = None) -> list[dict[str, Any]]:
    """The calls in PATH (oldest first) made at or after SINCE (epoch seconds) by a client whose
    User-Agent contains AGENT."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        if since is not None and line.startswith(_STAMP) and _older(line, since):
            continue  # not parsed: the log grows by every call of a test run, and each test reads it
        try:
            call = json.loads(line)
        except ValueError:
            continue
        if not isinstance(call, dict):
            continue
        if since is not None and float(call.get("t", 0)) < since:
            continue
        if agent is not None and agent not in str(call.get("ua", "")):
            continue
        out.append(call)
    return out


def line(call: dict[str, Any]) -> str:
    """One call as a readable line: `POST /api2/json/cluster/ha/resources/ -> 501 unmodelled (Go-http-client/1.1): ...`."""
    text = f"{call.get('method')} {call.get('path')} -> {call.get('status')} {call.get('kind')} ({call.get('ua')})"
    return text + (f": {call['msg']}" if call.get("msg") else "")
