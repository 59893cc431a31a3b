"""python -m maintain: a node's HA VMs moved away live, the node free for work, then everything back
where the rules want it (PVE's node maintenance mode, `ha-manager crm-command node-maintenance`).

For each node (one given, or every node with --all, one at a time):
  1. check that the cluster can take its VMs (maintain/checks.py); refused: nothing is done;
  2. enable maintenance (over SSH on the node: `ha-manager crm-command node-maintenance enable NODE`);
  3. wait until every HA VM has left it (a live migration on shared RBD storage), timing each;
  4. say the node is free, or run --then there and wait for the node to come back;
  5. disable maintenance and wait until every service is started where the rules want it.

Exit codes: 0 done (or --dry-run: the plan); 1 a step failed: the nodes before it are done, the
failed one is left safe (its VMs did not all leave in time: maintenance disabled, they stay or
come back; the --then command failed: the node stays in maintenance, its VMs away, and the
report says how to end it); 2 refused (a check failed: nothing was done on that node) or the
command could not run (API, SSH).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from clients.pve import cluster_ha
from drill.faults import FaultError, _run, _ssh
from drill.plan import _first_api
from drill.pve import ApiError, Pve
from drill.sources import SourceError, add_arguments, resolve
from drill.watch import snapshot
from maintain import checks

EPILOG = """\
examples:
  python -m maintain --stack dev pve-node1 --dry-run            # the checks and the plan only
  python -m maintain --stack dev pve-node1                      # free pve-node1, then bring it back
  python -m maintain --stack dev pve-node2 --then 'apt-get -y dist-upgrade && reboot'
  python -m maintain --stack dev --all --then 'apt-get -y dist-upgrade && reboot' --json > report.json
"""
POLL = 0.2
REBOOTS = re.compile(r"\breboot\b|\bshutdown\s+(-r|--reboot)\b")  # a --then command that reboots the node
GONE_DEADLINE = 120.0  # seconds a rebooting node has to leave the cluster after the command returned


@dataclass
class Move:
    sid: str
    source: str
    target: str | None = None
    started: float | None = None  # seconds after maintenance was enabled: the HA manager began the move
    seconds: float | None = None  # the move itself: from `migrate` to started on the target


@dataclass
class NodeRun:
    node: str
    outcome: str = "planned"  # planned | refused | done | failed
    problems: list[str] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    free_after: float | None = None  # seconds from enable until no HA VM was left on the node
    then: dict[str, Any] | None = None
    back: list[Move] = field(default_factory=list)  # the moves after maintenance was disabled
    seconds: float | None = None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m maintain",
        description="Node maintenance: move a node's HA VMs away live, free the node (or run a command there), then put everything back.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    m = p.add_argument_group("the maintenance")
    m.add_argument("node", nargs="?", help="the node to free (or --all)")
    m.add_argument("--all", action="store_true", help="every node, one at a time, in name order; stops at the first failure")
    m.add_argument("--then", metavar="COMMAND", help="run COMMAND on the node once it is free (a reboot is waited for), then end maintenance")
    m.add_argument("--dry-run", action="store_true", help="only check and print the plan; change nothing")
    m.add_argument(
        "--deadline", type=float, default=600, help="seconds for the VMs to leave, for the node to come back, and for them to return (default 600 each)"
    )
    m.add_argument("--json", action="store_true", help="print the report as JSON on stdout; the live text goes to stderr")
    return p


class Maintenance:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.runs: list[NodeRun] = []
        self.started = time.monotonic()

    def say(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    def finish(self, outcome: str, message: str) -> int:
        self.say(message)
        if self.args.json:
            data = {
                "schema": "pve-ceph-ha/maintain-report/v1",
                "outcome": outcome,
                "message": message,
                "dry_run": bool(self.args.dry_run),
                "seconds": round(time.monotonic() - self.started, 2),
                "nodes": [asdict(r) for r in self.runs],
            }
            print(json.dumps(data, indent=2))
        return {"done": 0, "planned": 0, "failed": 1}.get(outcome, 2)

    def run(self) -> int:
        args = self.args
        if bool(args.node) == bool(args.all):
            return self.finish("error", "maintain: name one node, or --all")
        try:
            self.cluster = resolve(args, need_vms=False)
            self.api = _first_api(self.cluster)
            view = checks.read(self.api)
        except (SourceError, ApiError) as exc:
            return self.finish("error", f"maintain: {exc}")
        nodes = sorted(view.nodes) if args.all else [args.node]
        if args.all:  # every node must be up before the first one is touched
            blocking = [p for p in checks.problems(view, nodes[0], rolling=True) if "down" in p]
            if blocking:
                self.runs.append(NodeRun(nodes[0], "refused", blocking))
                for problem in blocking:
                    self.say(f"  refused: {problem}")
                return self.finish("refused", "maintain refused: nothing was done")
        for node in nodes:
            code = self.one(node)
            if code is not None:
                return code
        if args.dry_run:
            return self.finish("planned", "This is the plan only: run again without --dry-run to do it.")
        total = time.monotonic() - self.started
        return self.finish("done", f"maintenance done on {', '.join(nodes)} in {total:.1f} s; every HA VM is started where the rules want it")

    def view(self) -> checks.View:
        return checks.read(self.api)

    def one(self, node: str) -> int | None:
        """One node's maintenance; an exit code when the run stops here."""
        args = self.args
        run = NodeRun(node)
        self.runs.append(run)
        try:
            view = self.view()
        except ApiError as exc:
            return self.finish("error", f"maintain: {exc}")
        moving = view.on(node)
        self.say(f"Maintenance of {node}: {len(moving)} HA VM(s) to move away" + (f" ({', '.join(s.sid for s in moving)})" if moving else ""))
        run.problems = checks.problems(view, node, rolling=args.all)
        if run.problems:
            run.outcome = "refused"
            for problem in run.problems:
                self.say(f"  refused: {problem}")
            return self.finish("refused", f"maintain refused on {node}: nothing was done there")
        self.say(f"  checks passed: quorum without {node}, memory, node and resource affinity")
        if args.dry_run:
            return None
        t0 = time.monotonic()
        try:
            self.crm(node, "enable")
            self.say(f"  +{0.0:6.1f}s  maintenance enabled on {node}")
            run.moves = self.wait_moves(node, [s.sid for s in moving], t0, leaving=True)
            run.free_after = round(time.monotonic() - t0, 2)
        except (FaultError, ApiError, TimeoutError) as exc:
            run.outcome, run.problems = "failed", [str(exc)]
            self.safe_disable(node)
            return self.finish("failed", f"maintain failed on {node}: {exc}; maintenance disabled, its VMs stay or return")
        self.say(f"  +{run.free_after:6.1f}s  {node} is free: no HA VM runs there")
        if args.then:
            try:
                run.then = self.then(node, args.then, t0)
            except (FaultError, TimeoutError) as exc:
                run.outcome, run.problems = "failed", [str(exc)]
                run.then = {"command": args.then, "ok": False, "message": str(exc)}
                fix = f"ha-manager crm-command node-maintenance disable {node}"
                return self.finish("failed", f"maintain failed on {node}: {exc}. The node stays in maintenance, its VMs away; when it is fixed: {fix}")
        try:
            self.crm(node, "disable")
            back = time.monotonic()
            self.say(f"  +{back - t0:6.1f}s  maintenance disabled on {node}")
            run.back = self.wait_moves(node, [m.sid for m in run.moves], back, leaving=False)
        except (FaultError, ApiError, TimeoutError) as exc:
            run.outcome, run.problems = "failed", [str(exc)]
            return self.finish("failed", f"maintain failed on {node} after its maintenance: {exc}")
        run.outcome, run.seconds = "done", round(time.monotonic() - t0, 2)
        self.say(f"  +{run.seconds:6.1f}s  done: every HA VM started where the rules want it")
        return None

    def ssh_any(self, preferred: str, argv: list[str], what: str, timeout: float = 30) -> str:
        """Run ARGV on PREFERRED, or on another node when it does not answer (any node can queue a CRM command)."""
        errors = []
        for node in [preferred, *sorted(n for n in self.cluster.nodes if n != preferred)]:
            try:
                return _run(_ssh(self.cluster, node), argv, what, timeout=timeout)
            except FaultError as exc:
                errors.append(str(exc))
        raise FaultError("; ".join(errors))

    def crm(self, node: str, action: str) -> None:
        self.ssh_any(node, ["ha-manager", "crm-command", "node-maintenance", action, node], f"ha-manager crm-command node-maintenance {action} {node}")

    def safe_disable(self, node: str) -> None:
        try:
            self.crm(node, "disable")
        except FaultError as exc:
            self.say(f"  could not disable maintenance on {node}: {exc}; run ha-manager crm-command node-maintenance disable {node} there")

    def wait_moves(self, node: str, sids: list[str], t0: float, leaving: bool) -> list[Move]:
        """Poll `ha-manager status` until SIDS left NODE (leaving), or, once maintenance is off, until
        the HA manager settled: NODE online, nothing moving, no service still waiting to return
        there (its maintenance_node). Each move is timed from its `migrate` to started on the
        other node; one too quick to be seen is timed by its qmigrate task."""
        moves: dict[str, Move] = {}
        deadline = t0 + self.args.deadline
        watcher = Pve(self.api.url, self.cluster, timeout=5)
        wall0 = time.time() - (time.monotonic() - t0)
        while True:
            now = time.monotonic()
            snap = snapshot(watcher)
            pending: list[str] = []
            if snap.error is None:
                waiting_back = [] if leaving else self.returning(watcher, node)
                for sid, entry in snap.services.items():
                    state, where = str(entry.get("state")), str(entry.get("node"))
                    move = moves.get(sid)
                    mine = sid in sids or sid in waiting_back or move is not None
                    if not mine:
                        continue
                    if state in ("migrate", "relocate") and move is None:
                        moves[sid] = Move(sid, where, started=round(now - t0, 2))
                        self.say(f"  +{now - t0:6.1f}s  {sid} {state} from {where}")
                    elif state == "started" and (where != node if leaving else where == node) and (move is None or move.seconds is None):
                        move = moves.setdefault(sid, self.task_move(watcher, sid, where, wall0, node if leaving else None))
                        move.target = where
                        if move.seconds is None:
                            move.seconds = round(now - t0 - (move.started or 0), 2)
                        self.say(f"  +{now - t0:6.1f}s  {sid} started on {where} ({move.seconds:.1f} s)")
                if leaving:
                    pending = [sid for sid in sids if snap.services.get(sid, {}).get("node") == node or sid not in moves or moves[sid].seconds is None]
                    if not pending and snap.ha_nodes.get(node) == "maintenance":
                        return list(moves.values())
                else:
                    moving = [sid for sid, e in snap.services.items() if e.get("state") in ("migrate", "relocate")]
                    pending = sorted(set(moving) | set(waiting_back) | {m.sid for m in moves.values() if m.seconds is None})
                    if not pending and snap.ha_nodes.get(node) == "online":
                        return list(moves.values())
            if now > deadline:
                raise TimeoutError(f"after {self.args.deadline:.0f} s still waiting for {', '.join(pending) or 'the HA manager'} (ha-manager status)")
            time.sleep(POLL)

    def returning(self, watcher: Pve, node: str) -> list[str]:
        """The services the HA manager will move back to NODE (manager status: maintenance_node)."""
        try:
            ss = (cluster_ha.manager_status(watcher.get).get("manager_status") or {}).get("service_status") or {}
        except ApiError:
            return []
        return sorted(sid for sid, sd in ss.items() if sd.get("maintenance_node") == node)

    def task_move(self, watcher: Pve, sid: str, target: str, since: float, source: str | None) -> Move:
        """A move seen only once done: its times from the qmigrate task (whole seconds, as PVE keeps them)."""
        vmid = sid.split(":")[-1]
        nodes = [source] if source else sorted(self.cluster.nodes)
        for name in nodes:
            try:
                tasks = watcher.get(f"nodes/{name}/tasks", vmid=vmid, limit=20)
            except ApiError:
                continue
            done = [t for t in tasks if t.get("type") == "qmigrate" and int(t.get("starttime") or 0) >= int(since) - 1 and t.get("endtime")]
            if done:
                task = max(done, key=lambda t: int(t["starttime"]))
                return Move(sid, name, target, round(task["starttime"] - since, 2), float(task["endtime"] - task["starttime"]))
        return Move(sid, source or "?", target)

    def then(self, node: str, command: str, t0: float) -> dict[str, Any]:
        """COMMAND on the node. A reboot is waited out until the node is back: the session drops,
        or, since `reboot` returns before the node goes down, a command that names a reboot is
        given GONE_DEADLINE seconds to take the node away."""
        self.say(f"  +{time.monotonic() - t0:6.1f}s  on {node}: {command}")
        started = time.monotonic()
        dropped = False
        try:
            output = _run(_ssh(self.cluster, node), ["sh", "-c", command], shlex.quote(command), timeout=self.args.deadline)
        except FaultError as exc:
            if "connection dropped" not in str(exc) and "did not finish" not in str(exc):
                raise
            output, dropped = "", True
        rebooted = False
        if dropped or REBOOTS.search(command):
            gone = time.monotonic() + GONE_DEADLINE
            while self.online(node) and time.monotonic() < gone:
                time.sleep(POLL)
            rebooted = not self.online(node)
            if not rebooted and dropped:
                raise FaultError(f"the session to {node} dropped during `{command}`, and the node stayed online: check what happened there")
        if rebooted:
            self.say(f"  +{time.monotonic() - t0:6.1f}s  {node} went away (a reboot): waiting for it to come back")
            deadline = time.monotonic() + self.args.deadline
            while not self.online(node):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{node} did not come back within {self.args.deadline:.0f} s after `{command}`")
                time.sleep(POLL)
        took = round(time.monotonic() - started, 2)
        self.say(f"  +{time.monotonic() - t0:6.1f}s  {node}: the command finished ({took:.1f} s{', the node is back' if rebooted else ''})")
        return {"command": command, "ok": True, "seconds": took, "rebooted": rebooted, "output_tail": output[-500:]}

    def online(self, node: str) -> bool:
        try:
            view = self.view()
        except ApiError:
            return False
        return bool(view.nodes.get(node)) and view.ha_nodes.get(node) in ("online", "maintenance")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    maintenance = Maintenance(args, sys.stderr if args.json else sys.stdout)
    try:
        return maintenance.run()
    except KeyboardInterrupt:
        node = maintenance.runs[-1].node if maintenance.runs else (args.node or "the node")
        maintenance.say(
            f"interrupted: {node} may still be in maintenance, its VMs away. Look with `ha-manager status`; "
            f"end it with `ha-manager crm-command node-maintenance disable {node}`"
        )
        return 130
