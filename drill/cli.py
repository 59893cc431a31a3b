"""python -m drill: runbook step 7, the HA failure test, against a real cluster or the lab.

Exit codes: 0 the plan (without --yes) or every VM recovered within the deadline; 1 a VM did
not recover in time, or the preview after the failover proposes changes; 2 refused (a
precondition failed: nothing was done) or the drill could not run (API, SSH, control channel).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from drill import faults, preview, report, watch
from drill import plan as plans
from drill.faults import Fault, FaultError
from drill.pve import ApiError, Pve
from drill.sources import Cluster, SourceError, add_arguments, resolve

EPILOG = """\
examples:
  python -m drill --stack dev --vm 101                       # the plan only
  python -m drill --stack dev --vm 101 --method poweroff --yes --deadline 300
  python -m drill --endpoint https://10.10.10.12:8006 --token-env PVE_TOKEN --ca-file ca.pem \\
      --node-ssh pve-node1=10.10.10.11 --vm 101 --method isolate --isolate-net 10.10.20.0/24 --yes
  python -m drill --lab-file .lab/lab.json --vm 101 --method lab --fault isolate --yes --restore
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m drill",
        description="Failover drill (runbook 7): fail the node of HA VMs, watch the HA manager recover them on another node, report the times.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    d = p.add_argument_group("the drill")
    d.add_argument("--vm", action="append", type=int, default=[], metavar="ID", help="an HA VM to watch (repeatable; default: every HA VM of the stack)")
    d.add_argument("--node", help="the node to fail (default: the node of the first VM)")
    d.add_argument("--method", choices=faults.METHODS, default="poweroff", help="how to fail the node (default poweroff)")
    d.add_argument("--fault", choices=faults.LAB_FAULTS, default="poweroff", help="with --method lab: the lab fault (default poweroff)")
    d.add_argument("--isolate-seconds", type=int, default=300, help="isolate: the rules remove themselves after this many seconds (default 300)")
    d.add_argument("--isolate-net", action="append", default=[], metavar="CIDR", help="isolate: also cut this network (repeatable)")
    d.add_argument("--deadline", type=float, default=300, help="seconds after the failure for every VM to run on another node (default 300)")
    d.add_argument("--yes", action="store_true", help="do it; without it the drill only prints the plan")
    d.add_argument("--restore", action="store_true", help="afterwards bring the node back where the method can (lab); otherwise say how")
    d.add_argument("--check-preview", metavar="PROJECT_DIR", help="afterwards run `pulumi preview --expect-no-changes -s STACK` there (needs --stack)")
    d.add_argument("--json", action="store_true", help="print the report as JSON (drill/report.schema.json) on stdout; the live text goes to stderr")
    return p


class Drill:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.fault = Fault(args.method, args.fault, args.isolate_seconds, tuple(args.isolate_net))

    def say(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    def at(self, t: float, text: str) -> None:
        self.say(f"  +{t:6.1f}s  {text}")

    def finish(self, outcome: str, plan: plans.Plan | None, message: str, **extra: Any) -> int:
        data = report.build(outcome, plan, method=self.args.method, fault=self.fault.kind, deadline=self.args.deadline, message=message, **extra)
        if data["injected_at"] is not None:
            for line in report.text(data):
                self.say(line)
        self.say(message)
        if self.args.json:
            print(json.dumps(data, indent=2))
        return {"planned": 0, "recovered": 0, "not_recovered": 1, "changes": 1}.get(outcome, 2)

    def show_plan(self, plan: plans.Plan) -> None:
        online = [n for n, up in sorted(plan.nodes.items()) if up]
        self.say(f"Failover drill (runbook 7): fail {plan.target or '?'}, watch from {plan.watch_from or '?'} ({plan.watch_api or 'no API'})")
        self.say(f"  cluster: {len(online)} of {len(plan.nodes)} nodes online, quorum {'OK' if plan.quorate else 'LOST'}; a majority is {plan.majority()}")
        for place in plan.vms:
            disks = ", ".join(f"{k} on {s}" for k, s in place.disks.items()) or "no disks"
            self.say(
                f"  {place.vm.sid}{f' ({place.vm.name})' if place.vm.name else ''}: {place.status or 'unknown'} on {place.node}; HA: {place.ha_status or 'none'}; {disks}"
            )
        for place in plan.elsewhere:
            self.say(f"  not in this drill: {place.vm.sid} runs on {place.node}")
        if plan.target:
            self.say(f"  method: {faults.describe(plan, self.fault)}")
        self.say(f"  deadline: {self.args.deadline:.0f} s for every VM to run on another node")

    def run(self) -> int:
        args = self.args
        if args.check_preview and not args.stack:
            return self.finish("error", None, "drill: --check-preview needs --stack STACK (the stack to preview)")
        try:
            cluster = resolve(args)
            plan = plans.make(cluster, args.node)
        except (SourceError, ApiError) as exc:
            return self.finish("error", None, f"drill: {exc}", reasons=[str(exc)])
        plan.problems += faults.check(cluster, plan, self.fault)
        self.show_plan(plan)
        if plan.problems:
            for reason in plan.problems:
                self.say(f"  refused: {reason}")
            return self.finish(
                "refused", plan, f"drill refused: nothing was done ({len(plan.problems)} precondition(s) failed, see above)", reasons=plan.problems
            )
        if not args.yes:
            return self.finish("planned", plan, f"This is the plan only: run again with --yes to fail {plan.target}.")
        return self.execute(cluster, plan)

    def execute(self, cluster: Cluster, plan: plans.Plan) -> int:
        args, node = self.args, plan.target or ""
        try:
            watcher = Pve(plan.watch_api or "", cluster, timeout=3)
        except ApiError as exc:
            return self.finish("error", plan, f"drill: {exc}", reasons=[str(exc)])
        before = watch.snapshot(watcher)
        subjects = [watch.Progress(place.vm, place.node or "") for place in plan.vms]
        self.say(f"Failing {node}: {faults.describe(plan, self.fault)}")
        injected_at, t0 = time.time(), time.monotonic()
        try:
            done = faults.inject(cluster, plan, self.fault)
        except FaultError as exc:
            return self.finish("error", plan, f"drill: the failure could not be injected: {exc}", reasons=[str(exc)])
        events = [watch.Event(0.0, done)]
        self.at(time.monotonic() - t0, done)
        restored: dict[str, Any] | None = None
        try:
            events += watch.watch(watcher, subjects, node, t0, args.deadline, self.at, first=before)
        except KeyboardInterrupt:
            self.say(f"interrupted: {node} is still failed")
            if not args.restore:
                self.say(faults.restore(cluster, plan, self.fault)[1])
            return 130
        finally:
            if args.restore:
                restored = self.restore(cluster, plan, watcher)
        extra: dict[str, Any] = {"progress": subjects, "events": events, "injected_at": injected_at, "restore": restored}
        late = [p.vm.sid for p in subjects if not p.recovered]
        if late:
            message = (
                f"drill failed: {', '.join(late)} not running on another node {args.deadline:.0f} s after the failure. "
                f"The HA manager may still be recovering: watch `ha-manager status` on {plan.watch_from}."
            )
            if restored is None:
                message += " " + faults.restore(cluster, plan, self.fault)[1]
            return self.finish("not_recovered", plan, message, reasons=[f"{sid}: not recovered within {args.deadline:.0f} s" for sid in late], **extra)
        if args.check_preview:
            ok, text = preview.check(args.check_preview, args.stack)
            self.say(text)
            extra["preview"] = {"ok": ok, "message": text}
            if not ok:
                return self.finish("changes", plan, "drill: HA recovered every VM, but Pulumi would change something after the failover (see above)", **extra)
        message = f"HA works: {', '.join(f'{p.vm.sid} started on {p.node}' for p in subjects)}."
        if restored is None:
            message += " " + faults.restore(cluster, plan, self.fault)[1]
        return self.finish("recovered", plan, message, **extra)

    def restore(self, cluster: Cluster, plan: plans.Plan, watcher: Pve, wait: float = 60) -> dict[str, Any]:
        done, message = faults.restore(cluster, plan, self.fault)
        self.say(message)
        if done:  # wait until the cluster sees the node again
            end = time.monotonic() + wait
            while time.monotonic() < end:
                if watch.snapshot(watcher).nodes_online.get(plan.target or "") is True:
                    message += "; it is online again"
                    self.say(f"{plan.target} is online again")
                    break
                time.sleep(0.5)
            else:
                message += f"; not online after {wait:.0f} s: check it"
                self.say(f"{plan.target} is not online after {wait:.0f} s: check it (ha-manager status)")
        return {"done": done, "message": message}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return Drill(args, sys.stderr if args.json else sys.stdout).run()
