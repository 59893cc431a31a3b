"""Runbook 1-1: ``ceph -s`` must show HEALTH_OK, every OSD up/in and the mon quorum, before Ceph is touched.

A check, not a state: the gate script (components/scripts/ceph_health_gate.py) runs on the Ceph
admin node on **every** ``pulumi preview`` and ``pulumi up``, not only when the pool's spec changes.
The engine asks a resource's provider to check the program's inputs (Check) on every preview and
up, and never in a refresh: the gate runs there (Create and Update record its report, from the
run's memo: the script runs once a run). The refresh's Read starts it in the background, so its
answer is ready when Check asks. A failing gate raises the script's reasons, so the preview shows
them and ``pulumi up`` stops before the pool (which depends on the gate) is touched. A healthy
gate with unchanged inputs reports no change: a healthy, unchanged stack previews with 0 changes.
Refresh and destroy never depend on it.

During a failover Ceph re-peers its PGs for a few seconds (the fenced node's client is
blocklisted, a new OSD map follows): when the script fails on the health, the provider reads
``ceph status`` and, if it shows only that peering (:func:`classify`), waits for it to settle
(:func:`settle`, up to :data:`PEERING_BOUND_S`) and runs the script again. `python -m verify`
(check 1-1) uses the same two functions.

The ``report`` output is the script's output (no secrets) from the gate's last create or update.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, cast

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from clients.ssh import Connection, Executor, RemoteError
from components.dynamic import ExecutorFactory, SshBacked, checks_due, connection_changed, prefetch, whole_numbers
from components.errors import OperatorError, failed
from components.graph import child_options

if TYPE_CHECKING:  # the config model (pydantic) is the program's; the provider process never loads it
    from components.config import PoolSpec

ID = "ceph-health-gate"
REASON = "ceph health gate: "  # the script's prefix of every problem it found
HEALTH_REASON = f"{REASON}health is "  # the script's problem line for a health that is not HEALTH_OK
COMPARED = ("pool", "pgNum", "size", "monitors")
NUMBERS = ("pgNum", "size")


def gate_script() -> str:
    return resources.files("components.scripts").joinpath("ceph_health_gate.py").read_text(encoding="utf-8")


def gate_argv(pool: str, pg_num: int, size: int) -> list[str]:
    """``python3 - POOL PG_NUM SIZE``, with the script on stdin."""
    return ["python3", "-", pool, str(int(pg_num)), str(int(size))]


def verdict(where: str, exit_status: int, stdout: str, stderr: str) -> str:
    """The report of a passed gate; an :class:`OperatorError` with the script's reasons otherwise."""
    if exit_status == 0:
        return stdout
    reasons = [line.removeprefix(REASON) for line in stdout.splitlines() if line.startswith(REASON)]
    if reasons:
        raise OperatorError(f"Ceph health gate (runbook 1-1) on {where}: " + "; ".join(reasons))
    tail = (stderr.strip() or stdout.strip()).splitlines()[-1:] or ["no output"]
    raise OperatorError(
        f"Ceph health gate (runbook 1-1) could not run on {where} (exit {exit_status}): {tail[0][-300:]}; "
        "the admin node needs python3 and the ceph CLI with the admin keyring"
    )


# ---------------------------------------------------------------------- runbook 1-1 during a failover: PG peering

# `ceph status`: the command the gate script and `python -m verify` (check 1-1) read it with.
STATUS_ARGV = ["ceph", "status", "-f", "json"]

# How long to wait for PG peering to settle, and how often to read `ceph status` meanwhile.
# A fenced node's librbd client is blocklisted; the new OSD map makes the PGs re-peer, which takes
# a second or two on a healthy cluster. `ceph status` shows it late: the OSDs report their PG states
# to the mgr every mgr_stats_period (5 s by default; 1 s in the lab) and the mgr passes the health
# to the monitors every mgr_tick_period (2 s), so a re-peer shows for up to ~10 s. 30 s is three
# times that, and half of mon_pg_stuck_threshold (60 s), after which Ceph itself calls a PG stuck.
# Every 2 s (mgr_tick_period): a faster read mostly gets the same answer, and costs the gate one
# SSH handshake each.
PEERING_BOUND_S = 30.0
PEERING_POLL_S = 2.0

# The health checks a re-peer raises (docs.ceph.com, rados/operations/health-checks): PG_AVAILABILITY,
# PGs "in a state that does not allow IO requests to be serviced" (peering, not yet active), and
# PG_DEGRADED, objects not yet replicated as often as the pool asks (writes during the change).
PEERING_CHECKS = frozenset({"PG_AVAILABILITY", "PG_DEGRADED"})
# The PG states of a re-peer with every OSD up (rados/operations/pg-states): peering; activating
# ("peered but not yet active"); wait (IO paused "until the previous interval's leases expire");
# then degraded objects recovered (recovery_wait, recovering). Any other state not in SETTLED (down,
# stale, incomplete, undersized, peered, unknown, inconsistent, remapped, backfill...) is a real problem.
SETTLING = frozenset({"peering", "activating", "wait", "degraded", "recovery_wait", "recovering"})
SETTLED = frozenset({"active", "clean", "scrubbing", "deep", "snaptrim", "snaptrim_wait"})
# What PG_AVAILABILITY and PG_DEGRADED count in their summary (`1 pg inactive, 1 pg peering`): a PG
# peering or activating is counted inactive too. Any other word (stale, down, stuck...) is a real problem.
SETTLING_COUNTS = SETTLING | {"inactive"}
PG_COUNT = re.compile(r"\b\d+ pgs? (\w+)")

HEALTHY, PEERING, PROBLEM = "healthy", "peering", "problem"


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _osds(status: dict[str, Any]) -> tuple[int, int, int]:
    osd = status["osdmap"].get("osdmap", status["osdmap"])  # older releases nest it
    return osd["num_osds"], osd["num_up_osds"], osd["num_in_osds"]


def _checks(status: dict[str, Any]) -> dict[str, Any]:
    return status["health"].get("checks", {})


def pg_states(status: dict[str, Any]) -> dict[str, int]:
    """``pgmap.pgs_by_state``: ``{"active+clean": 31, "peering": 1}``."""
    return {str(s["state_name"]): int(s["count"]) for s in (status.get("pgmap") or {}).get("pgs_by_state", [])}


def status_problems(status: dict[str, Any]) -> list[str]:
    """Runbook 1-1's problems in one `ceph status -f json`, in the words of `ceph -s`; none: healthy."""
    problems = []
    health = status["health"]["status"]
    if health != "HEALTH_OK":
        why = "; ".join(f"{name}: {c['summary']['message']}" for name, c in sorted(_checks(status).items()))
        problems.append(f"health is {health}, not HEALTH_OK ({why or 'see ceph health detail'})")
    total, up, in_ = _osds(status)
    if total == 0 or up != total or in_ != total:
        problems.append(f"osd: {total} osds: {up} up, {in_} in (every OSD must be up and in)")
    mons, quorum = status["monmap"]["num_mons"], status.get("quorum_names", [])
    if len(quorum) != mons:
        problems.append(f"mon: {mons} daemons, quorum {','.join(quorum)} (every monitor must be in quorum)")
    return problems


def classify(status: dict[str, Any]) -> str:
    """HEALTHY, PEERING (PGs re-peering with every OSD up and every monitor in quorum: it settles by
    itself within seconds) or PROBLEM (anything else that is not HEALTH_OK)."""
    problems = status_problems(status)
    if not problems:
        return HEALTHY
    checks, states = _checks(status), pg_states(status)
    peering_only = (
        len(problems) == 1  # the health line alone: every OSD up and in, every monitor in quorum
        and bool(checks)
        and set(checks) <= PEERING_CHECKS
        and all(set(PG_COUNT.findall(c["summary"]["message"])) <= SETTLING_COUNTS for c in checks.values())
        and bool(states)  # without the PG states there is no telling
        and all(set(state.split("+")) <= SETTLING | SETTLED for state in states)
    )
    return PEERING if peering_only else PROBLEM


@dataclass(frozen=True)
class CephHealth:
    """Runbook 1-1 read from `ceph status -f json`, PG peering waited out (:func:`settle`)."""

    status: dict[str, Any]  # the last answer read
    state: str  # HEALTHY, PEERING or PROBLEM: what that answer says
    peering_s: float | None = None  # how long PG peering was waited for; None when the first answer showed none
    bound_s: float = PEERING_BOUND_S

    @property
    def health(self) -> str:
        """``HEALTH_OK``, or ``HEALTH_OK after 4.2 s of PG peering``."""
        health = self.status["health"]["status"]
        return health if self.peering_s is None else f"{health} after {self.peering_s:.1f} s of PG peering"

    @property
    def summary(self) -> str:
        total, up, in_ = _osds(self.status)
        mons, quorum = self.status["monmap"]["num_mons"], self.status.get("quorum_names", [])
        return f"{self.health}; mon: {mons} daemons, quorum {','.join(quorum)}; osd: {total} osds: {up} up, {in_} in"

    @property
    def problems(self) -> list[str]:
        problems = status_problems(self.status)
        if self.state == PEERING:  # still peering at the bound
            pgs = ", ".join(f"{n} {state}" for state, n in sorted(pg_states(self.status).items(), key=lambda s: -s[1]))
            return [f"PG peering that did not settle within {self.bound_s:.0f} s: {problems[0]}; pgs: {pgs}"]
        return problems


def settle(read: Callable[[], dict[str, Any]], clock: Clock | None = None, bound_s: float = PEERING_BOUND_S, poll_s: float = PEERING_POLL_S) -> CephHealth:
    """Read `ceph status` (``read``); while it shows only PG peering, read it again every ``poll_s``
    for up to ``bound_s``. A healthy cluster or a real problem is answered at the first read."""
    clock = clock or SystemClock()
    started = clock.now()
    status = read()
    state = classify(status)
    waited = None
    while state == PEERING:
        waited = clock.now() - started
        if waited >= bound_s:
            break
        clock.sleep(min(poll_s, bound_s - waited))
        status = read()
        state = classify(status)
        waited = clock.now() - started
    return CephHealth(status, state, waited, bound_s)


def read_status(executor: Executor) -> dict[str, Any]:
    """`ceph status -f json` on the admin node."""
    result = executor.read(STATUS_ARGV, fresh=True)  # polled: each time what Ceph says now
    if result.exit_status != 0:
        raise RemoteError(f"`ceph status` failed (exit {result.exit_status}): {result.stderr.strip()[-300:]}")
    return dict(json.loads(result.stdout))


class HealthGateInputs(TypedDict):
    """The HealthGate resource's inputs: CephHealthGate writes them, HealthGateProvider reads them, the tests build them.
    The keys are the state's: renaming one changes every deployed stack. (``report`` is an output.)"""

    connection: Any  # the Ceph admin node's SSH connection (clients/ssh.py Connection.props), a secret
    pool: str
    pgNum: int
    size: int
    monitors: list[str]


def health_gate_inputs(props: Mapping[str, Any]) -> HealthGateInputs:
    """The typed view of a call's inputs, the state's keys in a plain dict; Pulumi hands a dynamic
    provider every number as a float: ``32.0`` must reach the gate script as ``32``."""
    return cast(HealthGateInputs, whole_numbers(props, NUMBERS))


class HealthGateProvider(SshBacked, ResourceProvider):
    def __init__(self, executor_factory: ExecutorFactory | None = None, clock: Clock | None = None) -> None:
        super().__init__(executor_factory)
        self._clock = clock  # a test's clock; None: the system's

    def evaluate(self, props: HealthGateInputs) -> str:
        """Run the gate now: its report, or an :class:`OperatorError` saying why Ceph must not be touched."""
        where = Connection.from_props(props["connection"]).where
        executor = self.executor(props)
        argv = gate_argv(props["pool"], props["pgNum"], props["size"])
        health = None
        try:
            result = executor.read(argv, stdin=gate_script())  # asked once a run: the refresh's Read may have asked already
            if result.exit_status != 0 and HEALTH_REASON in result.stdout:
                health = self.wait_for_peering(executor)
            if health is not None and health.state == PEERING:
                raise OperatorError(
                    f"Ceph health gate (runbook 1-1) on {where}: {'; '.join(health.problems)}; refusing to touch Ceph; "
                    "find the PGs that stay inactive (ceph pg dump_stuck inactive, then ceph pg PGID query) and run pulumi up again"
                )
            # Settled (or turned into something else while peering): the gate again, on what Ceph is now.
            # A real problem at the first read keeps the script's reasons: it fails at once.
            if health is not None and (health.state == HEALTHY or health.peering_s is not None):
                result = executor.read(argv, stdin=gate_script(), fresh=True)
        except RemoteError as exc:
            raise failed("Ceph health gate (runbook 1-1)", exc) from None
        report = verdict(where, result.exit_status, result.stdout, result.stderr)
        if health is not None and health.peering_s is not None:
            report += f"{REASON}{health.health}\n"
        return report

    def wait_for_peering(self, executor: Executor) -> CephHealth | None:
        """`ceph status` once more, and again while it shows only PG peering; None if it cannot be read
        (the script's own reasons then stand)."""
        try:
            return settle(lambda: read_status(executor), self._clock)
        except (RemoteError, ValueError, KeyError, TypeError):
            return None

    def check(self, old: dict[str, Any], new: dict[str, Any]) -> CheckResult:
        if checks_due(new):
            self.evaluate(health_gate_inputs(new))  # every preview and every up: raises with the reasons when Ceph is not healthy
        return CheckResult(inputs=new, failures=[])

    def create(self, raw: dict[str, Any]) -> CreateResult:
        props = health_gate_inputs(raw)
        return CreateResult(id_=ID, outs={**props, "report": self.evaluate(props)})

    def read(self, id_: str, raw: dict[str, Any]) -> ReadResult:
        props = health_gate_inputs(raw)
        prefetch(lambda: self.evaluate(props))  # for the Check that follows the refresh, in the same run
        return ReadResult(id_=id_, outs=raw)  # a check is not a state: nothing to read back

    def diff(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> DiffResult:
        olds, news = health_gate_inputs(old), health_gate_inputs(new)
        changes = [key for key in COMPARED if olds.get(key) != news.get(key)]
        if connection_changed(olds, news):
            changes.append("connection")
        return DiffResult(changes=bool(changes), replaces=[], stables=[])

    def update(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> UpdateResult:
        news = health_gate_inputs(new)
        return UpdateResult(outs={**news, "report": self.evaluate(news)})

    def delete(self, id_: str, raw: dict[str, Any]) -> None:
        return  # nothing in the world to remove


class HealthGateResource(Resource, module="pveceph", name="HealthGate"):
    report: pulumi.Output[str]

    def __init__(self, name: str, props: HealthGateInputs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection"])
        super().__init__(HealthGateProvider(), name, {"report": None, **props}, pulumi.ResourceOptions.merge(opts, secret))


class CephHealthGate(pulumi.ComponentResource):
    """Runs the health gate on the admin node on every preview and up; the run stops here with the reasons if Ceph is not healthy."""

    report: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        pool: PoolSpec,
        monitors: list[str],
        connection: pulumi.Input[dict[str, Any]],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:ceph:HealthGate", name, None, opts)
        props = HealthGateInputs(connection=connection, pool=pool.name, pgNum=pool.pg_num, size=pool.size, monitors=list(monitors))
        self.gate = HealthGateResource(f"{name}-check", props, child_options(self, opts))
        self.report = self.gate.report
        self.register_outputs({"report": self.report})
