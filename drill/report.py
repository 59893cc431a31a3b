"""Runbook 7-3's verdict: per VM recovered or not, where, and how long each step took.

The JSON report follows ``drill/report.schema.json``; :func:`problems` checks a report against it
(the subset of JSON Schema the file uses), so the drill needs no validator package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from drill.plan import Plan
from drill.watch import Event, Progress

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
SCHEMA_ID = "pve-ceph-ha/drill-report/v1"


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def build(
    outcome: str,
    plan: Plan | None,
    *,
    method: str,
    fault: str,
    deadline: float,
    message: str,
    reasons: list[str] | None = None,
    progress: list[Progress] | None = None,
    events: list[Event] | None = None,
    injected_at: float | None = None,
    restore: dict[str, Any] | None = None,
    preview: dict[str, Any] | None = None,
) -> dict[str, Any]:
    by_sid = {p.vm.sid: p for p in progress or []}
    vms = []
    for place in plan.vms if plan else []:
        p = by_sid.get(place.vm.sid)
        vms.append(
            {
                "vmid": place.vm.vmid,
                "sid": place.vm.sid,
                "name": place.vm.name or None,
                "from_node": place.node,
                "recovered": bool(p and p.recovered),
                "node": p.node if p else None,
                "detection_s": _seconds(p.detected) if p else None,
                "fence_s": _seconds(p.fenced) if p else None,
                "running_s": _seconds(p.running) if p else None,
                "running_at": p.running_at if p else None,
                "last_status": (p.last if p else None) or place.ha_status,
            }
        )
    return {
        "schema": SCHEMA_ID,
        "outcome": outcome,
        "ok": outcome in ("planned", "recovered"),
        "message": message,
        "reasons": reasons or [],
        "method": method,
        "fault": fault,
        "node": plan.target if plan else None,
        "watched_from": plan.watch_from if plan else None,
        "deadline_s": deadline,
        "injected_at": injected_at,
        "vms": vms,
        "timeline": [{"t": e.t, "event": e.text} for e in events or []],
        "restore": restore,
        "preview": preview,
    }


def text(report: dict[str, Any]) -> list[str]:
    """The verdict for people: one line per VM with its timings."""
    lines = []
    for vm in report["vms"]:
        if vm["recovered"]:
            lines.append(
                f"  {vm['sid']}: recovered on {vm['node']} (from {vm['from_node']}): "
                f"detected {_fmt(vm['detection_s'])}, fenced {_fmt(vm['fence_s'])}, running {_fmt(vm['running_s'])} after the failure"
            )
        else:
            lines.append(f"  {vm['sid']}: NOT recovered within {report['deadline_s']:.0f} s (last: {vm['last_status'] or 'no HA status'})")
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}


def problems(value: Any, spec: dict[str, Any] | None = None, where: str = "$") -> list[str]:
    """Where VALUE breaks SPEC (default: the report schema). Handles type, enum, const, required,
    properties, additionalProperties: false, items and minimum: what report.schema.json uses."""
    spec = schema() if spec is None else spec
    found: list[str] = []
    types = spec.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        ok = any(isinstance(value, _TYPES[n]) and not (n in ("integer", "number") and isinstance(value, bool)) for n in names)
        if not ok:
            return [f"{where}: {json.dumps(value)[:60]} is not of type {'/'.join(names)}"]
    if "enum" in spec and value not in spec["enum"]:
        found.append(f"{where}: {value!r} is not one of {spec['enum']}")
    if "const" in spec and value != spec["const"]:
        found.append(f"{where}: {value!r} is not {spec['const']!r}")
    if isinstance(value, int | float) and not isinstance(value, bool) and "minimum" in spec and value < spec["minimum"]:
        found.append(f"{where}: {value} is below {spec['minimum']}")
    if isinstance(value, dict):
        for key in spec.get("required", []):
            if key not in value:
                found.append(f"{where}: '{key}' is required")
        props = spec.get("properties", {})
        for key, item in value.items():
            if key in props:
                found += problems(item, props[key], f"{where}.{key}")
            elif spec.get("additionalProperties") is False:
                found.append(f"{where}: '{key}' is not allowed")
    if isinstance(value, list) and "items" in spec:
        for i, item in enumerate(value):
            found += problems(item, spec["items"], f"{where}[{i}]")
    return found
