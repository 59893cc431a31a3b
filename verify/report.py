"""The JSON report of `python -m verify --json`, following ``verify/report.schema.json``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from verify.checks import Finding

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
SCHEMA_ID = "pve-ceph-ha/verify-report/v1"
STATUSES = ("pass", "fail", "warn", "error")


def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def build(outcome: str, findings: list[Finding], stack: str | None, seconds: float, reasons: list[str] | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA_ID,
        "outcome": outcome,
        "ok": outcome == "passed",
        "stack": stack,
        "duration_s": round(seconds, 2),
        "counts": {s: sum(f.status == s for f in findings) for s in STATUSES},
        "reasons": list(reasons or []),
        "checks": [asdict(f) for f in findings],
    }
