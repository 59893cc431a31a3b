"""The drill's lag: how long after the API shows a recovered VM does `python -m drill` report it?

    .venv/bin/python bench/drill_lag.py [--runs N] [--vm 690] [--fault poweroff|isolate]

Against the lab (brought up if needed; an HA VM on the drill's RBD storage, removed at the end).
Each run fails the VM's node through the lab's control channel while an independent observer
polls the API every 50 ms; the lag is the drill's `running_at` minus the moment the observer
first saw the VM started on another node and running there. Also prints the recovery times.
A figure, not a pass/fail: the target is a lag of at most 1 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.testing.observe import Observer  # noqa: E402
from lab.testing.seed import LAB_JSON, LabAccess, ensure_ha_vm, ensure_storage, remove_vm, wait_ha_state  # noqa: E402


def one_run(lab_access: LabAccess, vmid: int, fault: str) -> dict:
    sid = f"vm:{vmid}"
    wait_ha_state(lab_access, sid)
    from_node = lab_access.service(sid)["node"]
    observer = Observer(lab_access, vmid, from_node, watch_node=next(n for n in lab_access.nodes if n != from_node))
    observer.start()
    try:
        argv = [sys.executable, "-m", "drill", "--lab-file", str(LAB_JSON), "--vm", str(vmid), "--method", "lab", "--fault", fault]
        run = subprocess.run([*argv, "--yes", "--restore", "--json", "--deadline", "180"], cwd=ROOT, capture_output=True, text=True, timeout=400)
    finally:
        observer.stop()
        lab_access.restore_all()
    vm = json.loads(run.stdout)["vms"][0] if run.stdout.strip() else {}
    if run.returncode != 0 or observer.seen_at is None:
        raise SystemExit(f"drill failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
    return {**vm, "lag": vm["running_at"] - observer.seen_at, "polls": observer.polls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--vm", type=int, default=690)
    parser.add_argument("--fault", choices=("poweroff", "isolate"), default="poweroff")
    args = parser.parse_args()
    import lab

    lab_access = LabAccess(lab.up(log=lambda _line: None))
    lab_access.restore_all()
    ensure_ha_vm(lab_access, args.vm, ensure_storage(lab_access), name=f"drillbench{args.vm}")
    results = []
    try:
        for i in range(args.runs):
            r = one_run(lab_access, args.vm, args.fault)
            results.append(r)
            print(
                f"run {i + 1}: vm:{args.vm} {r['from_node']} -> {r['node']}: detected {r['detection_s']:.1f} s, "
                f"fenced {r['fence_s']:.1f} s, running {r['running_s']:.1f} s; drill lag {r['lag']:+.3f} s",
                flush=True,
            )
    finally:
        remove_vm(lab_access, args.vm)
    lags = [r["lag"] for r in results]
    print(
        f"drill lag over {len(lags)} run(s): median {statistics.median(lags):+.3f} s, max {max(lags):+.3f} s (target <= 1 s); "
        f"recovery (running on another node) median {statistics.median(r['running_s'] for r in results):.1f} s "
        f"at time scale {lab_access.control('GET', '/status')['time_scale']}"
    )


if __name__ == "__main__":
    main()
