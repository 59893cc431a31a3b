"""Wall time of the whole program through the real engine on the lab, for 1, 10 and 30 VMs.

    .venv/bin/python bench/engine_stack.py [--vms 1 10 30] [--runs 3] [--profile DIR]

Per size and run, a fresh stack of the real program (`__main__.py`, the lab config with N HA
VMs spread over the nodes): cold `up`, no-op `preview`, no-op `up`, `destroy`. Prints the
median and the spread (min-max) of each step, then where a cold up's time goes: the busy time
of each resource type (from the engine's events, the time between a step's start and its end,
summed over the resources of that type, so parallel work counts more than once) and the PVE API
calls the lab served. With --profile, every proxmoxve plugin process of a size's first run writes
its CPU profile to DIR/<VMs>/ (the plugin's PVECEPHHA_PLUGIN_CPUPROFILE), and the top of the merged
profiles is printed: where the plugin and the bridge spend their time as the VMs grow. Figures,
not pass/fail. Needs the lab (`make lab-up`).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lab  # noqa: E402
import lab.ceph  # noqa: E402
import lab.pve  # noqa: E402
from lab.testing.stack import LabStack, api, forget, remove_vms  # noqa: E402

FIRST_VM = 600
NODES = ("pve-node1", "pve-node2", "pve-node3")


def config_for(prefix: str, vms: int) -> Any:
    def edit(config: dict[str, Any]) -> None:
        template = config["vms"][0]
        config["ceph"]["pool"]["name"] = f"{prefix}-pool"
        config["ceph"]["client"]["name"] = prefix
        config["storage"]["id"] = f"{prefix}-rbd"
        config["allowPoolDeletion"] = True
        config["vms"] = [{**template, "id": FIRST_VM + i, "name": f"bench{FIRST_VM + i}", "node": NODES[i % len(NODES)]} for i in range(vms)]

    return edit


class Busy:
    """Per resource type, the seconds between a step's start and its outputs (engine events)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, event: Any) -> None:
        now = time.monotonic()
        if event.resource_pre_event is not None:
            self.started[event.resource_pre_event.metadata.urn] = now
        outputs = event.res_outputs_event or event.res_op_failed_event
        if outputs is not None and getattr(outputs, "metadata", None) is not None:
            urn = outputs.metadata.urn
            if urn in self.started:
                kind = urn.rsplit("::", 2)[-2].rsplit("$", 1)[-1]
                started = self.started.pop(urn)
                if not kind.startswith(("pveceph:", "pulumi:pulumi:")):  # components and the stack only wrap their children
                    self.seconds[kind] += now - started


def timed(step: Any) -> float:
    start = time.monotonic()
    step()
    return time.monotonic() - start


def run_size(state: dict[str, Any], vms: int, runs: int, profile: Path | None = None) -> tuple[dict[str, list[float]], Busy, int]:
    figures: dict[str, list[float]] = {"cold up": [], "no-op preview": [], "no-op up": [], "destroy": []}
    busy, calls = Busy(), 0
    for run in range(runs):
        prefix = f"bench{vms}x{run}"
        remove_vms([FIRST_VM + i for i in range(vms)])
        forget(prefix)
        with tempfile.TemporaryDirectory() as tmp:
            env = None
            if profile is not None and run == 0:
                (profile / str(vms)).mkdir(parents=True, exist_ok=True)
                env = {"PVECEPHHA_PLUGIN_CPUPROFILE": str(profile / str(vms))}
            stack = LabStack(prefix, state, Path(tmp), config_for(prefix, vms), env=env)
            try:
                since, events = time.time(), Busy()
                figures["cold up"].append(timed(functools.partial(stack.up, on_event=events)))
                if run == 0:  # the breakdown of the first cold up
                    busy, calls = events, len(lab.pve.calls(since=since))
                # the new pool's placement groups are still being created: the health gate rightly
                # waits for them (HEALTH_OK), which is not a no-op's time (it was 4 s of a 7 s preview)
                lab.ceph.wait_healthy()
                figures["no-op preview"].append(timed(stack.preview))
                figures["no-op up"].append(timed(stack.up))
                figures["destroy"].append(timed(stack.destroy))
            finally:
                stack.remove()
                forget(prefix)
    return figures, busy, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, metavar="DIR", help="CPU profiles of the proxmoxve plugin, per size, into DIR")
    args = parser.parse_args()
    state = lab.load()
    print(f"real engine on the lab, the whole program (gate, pool, client, ceph-common x3, storage, preflight, N HA VMs), {args.runs} fresh stacks per size")
    # bpg's read of each VM lists every guest of the cluster (GET /cluster/resources), so VMs that
    # are not the bench's own make every figure larger (31 of them: a 30-VM no-op preview 4.8 s -> 5.2 s)
    others = [vm["vmid"] for vm in api().cluster.resources.get(type="vm") if not FIRST_VM <= vm["vmid"] < FIRST_VM + max(args.vms)]
    print(f"other VMs in the lab: {len(others)}" + (" (the figures are larger than on an empty lab)" if others else ""))
    print(f"{'VMs':>4} {'step':<15}{'median':>9}{'min':>9}{'max':>9}")
    breakdowns = []
    for vms in args.vms:
        figures, busy, calls = run_size(state, vms, args.runs, args.profile)
        for step, values in figures.items():
            print(f"{vms:>4} {step:<15}{statistics.median(values):>8.1f}s{min(values):>8.1f}s{max(values):>8.1f}s", flush=True)
        breakdowns.append((vms, busy, calls))
    print("\nwhere a cold up's time goes (busy seconds per resource type, summed over parallel steps; PVE API calls served)")
    for vms, busy, calls in breakdowns:
        top = sorted(busy.seconds.items(), key=lambda kv: -kv[1])[:8]
        print(f"{vms:>4} VMs: {calls} API calls; " + ", ".join(f"{kind} {seconds:.1f}s" for kind, seconds in top))
    if args.profile is not None:
        for vms in args.vms:
            profiles = sorted(str(p) for p in (args.profile / str(vms)).glob("*.pprof"))
            top = subprocess.run(["go", "tool", "pprof", "-top", "-nodecount=25", *profiles], capture_output=True, text=True, check=False)
            print(f"\nthe proxmoxve plugin, {vms} VMs, a cold up, a no-op preview, a no-op up and a destroy ({len(profiles)} processes):")
            print(top.stdout or top.stderr)


if __name__ == "__main__":
    main()
