"""What a test needs to share the lab with other runs: a settled lab before it starts, the plan of a
preview as data, and the lab's verdict on the PVE API calls the test's own objects met.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lab
from lab import wait_for
from lab.pve.control import Control
from lab.testing.engine import cli
from lab.testing.seed import LabAccess
from lab.testing.stack import admin, forget_stack


def settled(mode: str = "rules", deadline: float = 300) -> None:
    """The lab as the tests expect it: every PVE node on and online with its HA services active, the
    cluster in MODE (PVE 9 rules, the default) and Ceph HEALTH_OK. Another run's fault, mode switch
    or drift may still be in the lab: the program's health gate refuses to touch Ceph, and its HA
    preflight to register HA, while it is not so, and a test started then would fail for another
    test's reason.
    """
    control = Control()

    def nodes_up() -> bool:
        status = control.status()
        if status["mode"] != mode or not all(n["power"] == "on" and n["online"] for n in status["nodes"].values()):
            return False
        return all(unit["active"] == "active" for node in status["nodes"] for name, unit in control.services(node).items() if name.startswith("pve-ha-"))

    wait_for(f"every lab PVE node on, online and running its HA services, in {mode} mode", nodes_up, deadline, interval=0.25)
    wait_for("Ceph HEALTH_OK", lambda: admin("ceph health").startswith("HEALTH_OK"), deadline, interval=0.5)


# The HA clock of the tests that count failovers rather than time them (issue #22): PVE's timers
# (the fence delay, the agent lock's expiry) 20x fast, where the lab runs them 10x fast. A poweroff
# keeps PVE's order of events (the dead client's RBD watch, 5 real seconds in lab/ceph.py, is gone
# before the fence is acknowledged at 120 x 0.05 = 6 s); after an isolation the node's watchdog
# resets it at 3 s, so the recovering VM's start waits up to 2 s more for that watch to expire
# (lab/pve/holder.py, as librbd does), as on a PVE cluster whose Ceph is slow to drop a dead client.
FAST_HA = 0.05


@contextlib.contextmanager
def ha_clock(scale: float = FAST_HA) -> Iterator[None]:
    """The lab's time scale set to SCALE for the block, and given back after it whatever happens."""
    control = Control()
    before = float(control.status()["time_scale"])
    control.set_time_scale(scale)
    try:
        yield
    finally:
        control.set_time_scale(before)


def plan(env: dict[str, str], work: Path, stack: str) -> list[dict[str, Any]]:
    """``pulumi preview --json`` of STACK: every step that changes something, as ``op``, ``urn``,
    ``type``, ``diffs`` (the top-level properties that differ) and ``detailed`` (the engine's
    detailed diff: property path -> kind)."""
    done = cli(env, "preview", "--json", "--diff", "--non-interactive", "--stack", stack, cwd=work)
    if done.returncode != 0:
        raise AssertionError(f"pulumi preview failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    out = []
    for step in json.loads(done.stdout).get("steps", []):
        if step["op"] in ("same", "read", "refresh"):
            continue
        detailed = {path: diff.get("kind", "") for path, diff in (step.get("detailedDiff") or {}).items()}
        paths = list(detailed) or list(step.get("diffReasons") or [])
        top = sorted({re.split(r"[.\[]", path, maxsplit=1)[0] for path in paths})
        out.append({"op": step["op"], "urn": step["urn"], "type": step["urn"].split("::")[-2].split("$")[-1], "diffs": top, "detailed": detailed})
    return out


def unmodelled(since: float, markers: Iterable[str]) -> list[str]:
    """The proxmoxve plugin's calls since SINCE (a ``time.time()`` taken before the run) that the lab answered otherwise than PVE would
    (``unmodelled`` 501s, ``lab-fault`` 500s), limited to paths naming one of MARKERS (this
    test's VM ids, storage, rules, groups): other runs share the lab."""
    wanted = list(markers)
    return [line for line in lab.pve.unmodelled(since, agent="Go-http-client") if any(m in line for m in wanted)]


@contextlib.contextmanager
def own_corner(lab_state: dict[str, Any], prefix: str, vm_ids: list[int]) -> Iterator[LabAccess]:
    """A test module's own names and VM ids in the shared lab: cleared before (what an interrupted
    earlier run left) and after, with the lab settled first."""
    access = LabAccess(lab_state)
    forget_stack(prefix, vm_ids)
    settled()
    try:
        yield access
    finally:
        forget_stack(prefix, vm_ids)
