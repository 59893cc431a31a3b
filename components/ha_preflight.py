"""Runbook 4: the HA services on every node and ``ha-manager status`` (quorum OK, a master), and
``pveversion`` against ``ha.mode`` (groups on PVE 8, rules on PVE 9).

A check, not a state, like the Ceph health gate: one resource for the whole cluster, evaluated on
every ``pulumi preview`` and ``pulumi up`` (in Check, which the engine calls for the program's
inputs only, never in a refresh; Create and Update record the report, from the run's memo). The
refresh's Read starts asking in the background, so the answers are ready when Check asks. It
reaches each node over SSH with that node's secret connection:

- ``ha-manager status --verbose`` on the first node that answers with ``quorum OK`` must show a
  ``master``; its ``lrm`` lines and the CRM's node states say which nodes the cluster has online;
- ``pveversion`` there must match ``ha.mode``;
- ``systemctl is-active pve-ha-lrm pve-ha-crm`` on every node.

A node the cluster does not have online (``lrm pve-node1 (old timestamp - dead?, ...)``, CRM state
``unknown``/``fence``/``gone``) and that does not answer SSH is down, e.g. powered off and fenced
during a failover: it is named in the report but is not a failure, so a failover never turns
``pulumi preview`` into a change or ``pulumi up`` into an error. A node the cluster has online whose
services are not active is a failure, with the fix. The parsing is plain Python on the commands'
outputs (:func:`parse_ha_status`, :func:`mode_problem`, :func:`service_problems`, :func:`evaluate`),
testable without SSH.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from clients.ssh import RemoteError, Result, Unreachable
from components.dynamic import SshBacked, checks_due, prefetch
from components.errors import OperatorError
from components.graph import child_options

ID = "ha-preflight"
SERVICES = ("pve-ha-lrm", "pve-ha-crm")
STATUS = ["ha-manager", "status", "--verbose"]
VERSION = ["pveversion"]
IS_ACTIVE = ["systemctl", "is-active", *SERVICES]
# What PVE's HA status (API2/HA/Status.pm) prints for an LRM the cluster cannot hear from.
DEAD_LRM = ("old timestamp - dead?", "unable to read lrm status")
# The CRM's node states (NodeStatus.pm) of a node that is a working cluster member.
ONLINE_CRM = ("online", "maintenance")
LINE = re.compile(r"^(quorum|master|lrm|service) (.*)$")
LRM = re.compile(r"^(\S+) \((.*)\)$")
PVE_VERSION = re.compile(r"^pve-manager/(\d+)\.")
_WARNED: set[str] = set()  # the nodes this provider process warned of


@dataclass(frozen=True)
class HaStatus:
    """``ha-manager status --verbose`` as read from one node."""

    quorum: str | None = None  # "OK", or PVE's reason ("No quorum on node 'pve-node1'!")
    master: str | None = None  # "pve-node1 (active, <date>)"
    lrm: dict[str, str] = field(default_factory=dict)  # node -> "active" | "idle" | "old timestamp - dead?" | ...
    node_status: dict[str, str] = field(default_factory=dict)  # the CRM's view: node -> online | unknown | fence | gone | maintenance
    services: dict[str, tuple[str, str]] = field(default_factory=dict)  # `service vm:101 (pve-node1, started)`: sid -> (node, state)

    def not_online(self, node: str) -> str | None:
        """Why the cluster does not have ``node`` online, or None when it does (or does not say)."""
        crm = self.node_status.get(node)
        if crm is not None and crm not in ONLINE_CRM:
            return f"the HA manager has it {crm}"
        lrm = self.lrm.get(node)
        if lrm in DEAD_LRM:
            return f"lrm {node} ({lrm})"
        return None


def parse_ha_status(text: str) -> HaStatus:
    """The ``quorum``, ``master``, ``lrm`` and ``service`` lines, and the node states of the ``full cluster state`` JSON."""
    quorum = master = None
    lrm: dict[str, str] = {}
    services: dict[str, tuple[str, str]] = {}
    lines = text.splitlines()
    for line in lines:
        if line.startswith("full cluster state:"):
            break
        found = LINE.match(line.strip())
        if found is None:
            continue
        kind, rest = found.groups()
        if kind == "quorum":
            quorum = rest
        elif kind == "master":
            master = rest
        elif kind == "lrm" and (entry := LRM.match(rest)):
            lrm[entry.group(1)] = entry.group(2).split(", ")[0]
        elif kind == "service" and (entry := LRM.match(rest)) and ", " in entry.group(2):
            node, _, state = entry.group(2).partition(", ")
            services[entry.group(1)] = (node, state)
    node_status: dict[str, str] = {}
    if "full cluster state:" in text:
        try:
            state = json.loads(text.split("full cluster state:", 1)[1])
            node_status = {str(k): str(v) for k, v in (state.get("manager_status", {}).get("node_status") or {}).items()}
        except (ValueError, AttributeError):
            node_status = {}  # the lrm lines still tell
    return HaStatus(quorum=quorum, master=master, lrm=lrm, node_status=node_status, services=services)


def mode_problem(version: str, mode: str) -> str | None:
    """``pveversion`` against ``ha.mode``: PVE 8 has HA groups; PVE 9 migrated them to HA rules."""
    found = PVE_VERSION.match(version.strip())
    if found is None:
        return f"cannot read the PVE version from: {version.strip()[:200]}"
    major = int(found.group(1))
    if major >= 9 and mode == "groups":
        return f"ha.mode is groups, but the cluster runs PVE {major}, where HA groups were migrated to HA rules; set ha.mode: rules"
    if major < 9 and mode == "rules":
        return f"ha.mode is rules, but the cluster runs PVE {major}, which has HA groups and no HA rules; set ha.mode: groups"
    return None


def service_problems(node: str, result: Result) -> list[str]:
    """``systemctl is-active pve-ha-lrm pve-ha-crm``: one line per service; every one must be ``active``."""
    states = result.stdout.split()
    if len(states) != len(SERVICES):
        detail = (result.stdout.strip() or result.stderr.strip())[-200:]
        return [f"{node}: `systemctl is-active {' '.join(SERVICES)}` answered {detail!r} (exit {result.exit_status}); check the node's systemd"]
    return [
        f"{node}: {service} is {state}, not active (running); start it: systemctl start {service}"
        for service, state in zip(SERVICES, states, strict=True)
        if state != "active"
    ]


@dataclass
class Outcome:
    report: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # down and not online in the cluster: reported, not failed
    version: str = ""


Run = Callable[[str, list[str]], Result]  # (node, argv) -> result; raises Unreachable / RemoteError


def evaluate(nodes: list[str], mode: str, run: Run) -> Outcome:
    """The whole preflight over ``run``; the outcome lists every problem, each with its fix."""
    out = Outcome()
    failed: dict[str, RemoteError] = {}  # nodes whose SSH failed already: not asked twice, reported once
    status: HaStatus | None = None
    source = None
    first_answer: tuple[str, HaStatus] | None = None
    for node in nodes:  # the cluster's view, from the first node that answers with quorum
        try:
            result = run(node, STATUS)
        except RemoteError as exc:
            failed[node] = exc
            continue
        if result.exit_status != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-200:]
            out.problems.append(f"{node}: ha-manager status failed (exit {result.exit_status}): {detail}; check pve-cluster and pve-ha-crm on it")
            continue
        seen = parse_ha_status(result.stdout)
        first_answer = first_answer or (node, seen)
        if seen.quorum == "OK":
            source, status = node, seen
            break
    if status is None and first_answer is not None:
        source, status = first_answer
    if status is None or source is None:
        if not out.problems:
            reasons = "; ".join(str(exc) for exc in failed.values())
            out.problems.append(f"no node answered ha-manager status ({reasons}); check the nodes, their sshd and ssh.knownHostsFile")
        return out
    if status.quorum != "OK":
        out.problems.append(f"no quorum OK in ha-manager status ({source}: quorum {status.quorum}); fix the cluster (pvecm status) first")
    if status.master is None:
        out.problems.append("ha-manager status shows no master; check pve-ha-crm on every node")
    out.report.append(f"{source}: quorum {status.quorum}, master {status.master}")

    try:
        version = run(source, VERSION)
        if version.exit_status != 0:
            out.problems.append(f"pveversion failed on {source} (exit {version.exit_status})")
        else:
            out.version = version.stdout.strip()
            out.report.append(f"{source}: {out.version} (ha.mode {mode})")
            problem = mode_problem(version.stdout, mode)
            if problem:
                out.problems.append(problem)
    except RemoteError as exc:
        out.problems.append(f"{source}: {exc}")

    def services(node: str) -> tuple[list[str], list[str], bool]:
        """(report lines, problems, skipped) for one node."""
        down = status.not_online(node) if status else None
        try:
            if node in failed:
                raise failed[node]
            result = run(node, IS_ACTIVE)
        except Unreachable as exc:
            if down:
                return [f"{node}: not online in the cluster ({down}) and not answering SSH: skipped (a node down or fenced)"], [], True
            if status is not None and status.quorum == "OK":
                # The seconds after a node dies, before the CRM marks it (its lrm line is still fresh):
                # the quorate cluster manages HA without it, so a node dying during a command is not
                # that command's failure. A node that stays up without its sshd is marked by nobody:
                # the warning says so, and verify's 4-1 fails it.
                return [f"{node}: not answering SSH ({exc}); the cluster still has it online: skipped (a node that just went down, or its sshd)"], [], True
            return [], [f"{node}: {exc}, but the cluster has it online; check the node and its sshd"], False
        except RemoteError as exc:
            return [], [f"{node}: {exc}"], False
        problems = service_problems(node, result)
        line = f"{node}: " + ", ".join(f"{s} {st}" for s, st in zip(SERVICES, result.stdout.split(), strict=False))
        return [line + (f" (the cluster: {down})" if down else "")], problems, False

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(nodes)))) as pool:
        for node, (lines, problems, skipped) in zip(nodes, pool.map(services, nodes), strict=True):
            out.report.extend(lines)
            out.problems.extend(problems)
            if skipped:
                out.skipped.append(node)
    return out


class PreflightInputs(TypedDict):
    """The HaPreflight resource's inputs: HaPreflight writes them, PreflightProvider reads them, the tests build them.
    The keys are the state's: renaming one changes every deployed stack. (``report``, ``pveVersion`` and
    ``skippedNodes`` are outputs.)"""

    nodes: list[str]
    connections: Any  # {node: its SSH connection (clients/ssh.py Connection.props)}, a secret
    mode: str  # ha.mode: groups (PVE 8) or rules (PVE 9)


def preflight_inputs(props: Mapping[str, Any]) -> PreflightInputs:
    """The typed view of a call's inputs: the SDK hands the provider the state's keys as a plain dict."""
    return cast(PreflightInputs, props)


class PreflightProvider(SshBacked, ResourceProvider):
    def run_preflight(self, props: PreflightInputs) -> dict[str, Any]:
        """Evaluate now: the outputs, or an :class:`OperatorError` naming every problem and its fix."""
        connections = props["connections"]
        executors = {node: self.executor_for(connections[node]) for node in props["nodes"]}
        outcome = evaluate(list(props["nodes"]), str(props["mode"]), lambda node, argv: executors[node].read(argv))
        if outcome.problems:
            raise OperatorError("HA preflight: " + "; ".join(outcome.problems))
        for line in outcome.report:
            node = line.split(":", 1)[0]
            if line.endswith(")") and ": skipped (" in line and node not in _WARNED:
                # the engine shows a provider's stderr with the run's diagnostics; once a node and run
                # (the provider process), though the engine asks for the check more than once and the
                # cluster's view of a dying node changes in between
                _WARNED.add(node)
                print(f"warning: HA preflight: {line}; quorum holds, so the run goes on without it", file=sys.stderr, flush=True)
        return {**props, "report": "\n".join(outcome.report), "pveVersion": outcome.version, "skippedNodes": outcome.skipped}

    def check(self, old: dict[str, Any], new: dict[str, Any]) -> CheckResult:
        if checks_due(new):
            self.run_preflight(preflight_inputs(new))  # every preview and every up
        return CheckResult(inputs=new, failures=[])

    def create(self, raw: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=ID, outs=self.run_preflight(preflight_inputs(raw)))

    def read(self, id_: str, raw: dict[str, Any]) -> ReadResult:
        props = preflight_inputs(raw)
        prefetch(lambda: self.run_preflight(props))  # for the Check that follows the refresh, in the same run
        return ReadResult(id_=id_, outs=raw)  # a check is not a state: nothing to read back

    def diff(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> DiffResult:
        olds, news = preflight_inputs(old), preflight_inputs(new)
        changes = [key for key in ("nodes", "mode") if olds.get(key) != news.get(key)]
        old_conns, new_conns = olds.get("connections") or {}, news.get("connections") or {}
        endpoints = ("host", "port", "user")
        if {n: [c.get(k) for k in endpoints] for n, c in old_conns.items()} != {n: [c.get(k) for k in endpoints] for n, c in new_conns.items()}:
            changes.append("connections")
        return DiffResult(changes=bool(changes), replaces=[], stables=[])

    def update(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self.run_preflight(preflight_inputs(new)))

    def delete(self, id_: str, raw: dict[str, Any]) -> None:
        return  # nothing in the world to remove


class PreflightResource(Resource, module="pveceph", name="HaPreflight"):
    report: pulumi.Output[str]

    def __init__(self, name: str, props: PreflightInputs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connections"])
        outputs = {"report": None, "pveVersion": None, "skippedNodes": None}
        super().__init__(PreflightProvider(), name, {**outputs, **props}, pulumi.ResourceOptions.merge(opts, secret))


class HaPreflight(pulumi.ComponentResource):
    """pve-ha-lrm and pve-ha-crm active on every node, ``quorum OK`` and a master, ``pveversion`` vs ``ha.mode``; before any HA resource."""

    report: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        connections: Mapping[str, pulumi.Input[dict[str, Any]]],
        mode: str,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:proxmox:HaPreflight", name, None, opts)
        props = PreflightInputs(nodes=list(connections), connections=pulumi.Output.secret(dict(connections)), mode=mode)
        self.check = PreflightResource(f"{name}-check", props, child_options(self, opts))
        self.report = self.check.report
        self.register_outputs({"report": self.report})
