"""What a check is: its :class:`Finding`, the :class:`Context` it asks (the cluster through
:class:`verify.probe.Probe`, and the stack's config), and the registry the checks join in the
runbook's order (:func:`check`). The checks: verify/checks.py (runbook 1-5), verify/best_practices.py (8).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clients.pve import cluster
from clients.ssh import RemoteError, Result, Unreachable, render
from components import ha_preflight
from components.ceph_health import STATUS_ARGV, CephHealth, Clock, SystemClock, settle
from components.config import BestPractice, StackConfig
from verify.probe import ADMIN, ApiError, Once, Probe

# qemu-server's default CPU model when a VM's config has no `cpu` (PVE::QemuServer::CPUConfig)
QEMU_DEFAULT_CPU = "kvm64"
WATCHDOG = "watchdog-mux"


class CannotRun(Exception):
    """A check could not ask its question at all (the admin node or the API unreachable): exit 2."""


@dataclass
class Finding:
    id: str
    step: str  # the runbook's step: "1-1", "2-3", "8"
    title: str  # in the runbook's words
    status: str = "pass"  # pass | fail | warn | error
    summary: str = ""  # what was seen, one line
    problems: list[str] = field(default_factory=list)
    fix: str | None = None
    best_practice: BestPractice | None = None  # the bestPractices.enforce name of a runbook 8 check
    enforced: bool = False


@dataclass
class Context:
    config: StackConfig
    probe: Probe
    outputs: dict[str, Any] = field(default_factory=dict)
    clock: Clock = field(default_factory=SystemClock)  # how long to wait for PG peering to settle

    # ------------------------------------------------------------------ asking

    def admin(self, argv: list[str], again: bool = False) -> Result:
        """A command on the Ceph admin node; unreachable or failing SSH means the check cannot run.

        ``again`` asks anew: :class:`Once` would give the answer every check shares."""
        probe = self.probe.probe if again and isinstance(self.probe, Once) else self.probe
        try:
            return probe.ssh(ADMIN, argv)
        except RemoteError as exc:
            raise CannotRun(f"the Ceph admin node: {exc}") from None

    def admin_ok(self, argv: list[str], again: bool = False) -> str:
        result = self.admin(argv, again)
        if result.exit_status != 0:
            detail = (result.stderr.strip() or "no output").splitlines()[-1][-300:]
            raise CannotRun(f"`{render(argv)}` on the Ceph admin node failed (exit {result.exit_status}): {detail}")
        return result.stdout

    def admin_json(self, argv: list[str], again: bool = False) -> Any:
        text = self.admin_ok(argv, again)
        try:
            return json.loads(text or "null")
        except ValueError:
            raise CannotRun(f"`{render(argv)}` on the Ceph admin node: the answer is not JSON: {text.strip()[:200]!r}") from None

    def api(self, path: str) -> Any:
        try:
            return self.probe.api(path)
        except ApiError as exc:
            if exc.fatal:
                raise CannotRun(f"the PVE API: {exc}") from None
            raise

    @property
    def nodes(self) -> list[str]:
        return [n.name for n in self.config.proxmox.nodes]

    @property
    def pool(self) -> str:
        return self.config.ceph.pool.name

    @property
    def storage(self) -> str:
        return self.config.storage.id

    @property
    def ha_vms(self) -> list[Any]:
        return [vm for vm in self.config.vms if vm.ha]

    def recorded_images(self) -> dict[int, list[str]]:
        """vmid -> its images as the stack's outputs record them (``vms[].images``: ``rbd-pool/vm-101-disk-0``)."""
        out: dict[int, list[str]] = {}
        for vm in self.outputs.get("vms") or []:
            if isinstance(vm, dict) and "id" in vm:
                out[int(vm["id"])] = [str(i).split("/", 1)[1] for i in vm.get("images") or [] if str(i).startswith(f"{self.pool}/")]
        return out

    def ceph_status(self) -> dict[str, Any]:
        return self.admin_json(STATUS_ARGV)

    def ceph_health(self) -> CephHealth:
        """`ceph status`, read again while it shows only PG peering (a node just fenced): :func:`components.ceph_health.settle`."""
        reads = 0

        def read() -> dict[str, Any]:
            nonlocal reads
            reads += 1
            return self.admin_json(STATUS_ARGV, again=reads > 1)  # the first read is the answer every check shares

        return settle(read, self.clock)

    def vm_nodes(self) -> dict[int, dict[str, Any]]:
        """vmid -> its /cluster/resources entry (node, status)."""
        return {int(r["vmid"]): r for r in cluster.resources(self.api) if r.get("type") == "qemu"}

    def ha_status(self) -> tuple[str, str] | None:
        """(node, `ha-manager status --verbose`) from the first node that answers, or None."""
        for node in self.nodes:
            try:
                result = self.probe.ssh(node, ha_preflight.STATUS)
            except RemoteError:
                continue
            if result.exit_status == 0:
                return node, result.stdout
        return None

    def ceph_interface(self, host: str) -> tuple[str, dict[str, Any]]:
        """The interface ``host`` reaches the first monitor through, and its `ip -j link` entry."""
        monitor = self.config.ceph.monitors[0]
        route = _ip_json(self.probe.ssh(host, ["ip", "-j", "route", "get", monitor]), f"ip -j route get {monitor}")
        dev = str(route[0]["dev"])
        link = _ip_json(self.probe.ssh(host, ["ip", "-j", "link", "show", "dev", dev]), f"ip -j link show dev {dev}")
        return dev, link[0]


def _ip_json(result: Result, what: str) -> list[dict[str, Any]]:
    if result.exit_status != 0:
        raise RemoteError(f"`{what}` failed (exit {result.exit_status}): {result.stderr.strip()[-200:]}")
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise RemoteError(f"`{what}`: the answer is not JSON") from None
    if not isinstance(data, list) or not data:
        raise RemoteError(f"`{what}`: no answer")
    return data


def _each_node(ctx: Context, argv: list[str]) -> dict[str, Result | RemoteError]:
    out: dict[str, Result | RemoteError] = {}
    for node in ctx.nodes:
        try:
            out[node] = ctx.probe.ssh(node, argv)
        except RemoteError as exc:
            out[node] = exc
    return out


def _unreached(node: str, exc: RemoteError) -> str:
    if isinstance(exc, Unreachable):
        return f"{node} does not answer SSH ({exc}): power it on or check its network"
    return f"{node}: {exc}"


Title = str | Callable[[Context], str]
CheckFn = Callable[[Context, Finding], None]


@dataclass(frozen=True)
class Check:
    """One check: its id, the runbook step, its title (in the runbook's words) and its body."""

    id: str
    step: str
    title: Title
    body: CheckFn
    best_practice: BestPractice | None = None

    def run(self, ctx: Context) -> Finding:
        """The finding; what the check could not ask becomes its finding, never a traceback."""
        title = self.title(ctx) if callable(self.title) else self.title
        f = Finding(self.id, self.step, title, best_practice=self.best_practice)
        if f.best_practice is not None:
            f.enforced = f.best_practice in ctx.config.best_practices.enforce
        try:
            self.body(ctx, f)
        except CannotRun as exc:
            f.status, f.problems, f.fix = "error", [str(exc)], None
            return f
        except (ApiError, RemoteError) as exc:
            f.problems.append(str(exc))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            f.status, f.fix = "error", None
            f.problems = [f"an answer verify does not understand ({type(exc).__name__}: {exc})"]
            return f
        if f.problems:
            f.status = "fail" if f.best_practice is None or f.enforced else "warn"
        else:
            f.status, f.fix = "pass", None
        return f


CHECKS: list[Check] = []


def check(id_: str, step: str, title: Title, best_practice: BestPractice | None = None) -> Callable[[CheckFn], Check]:
    """Register a check, in the runbook's order (the order of this module)."""

    def register(body: CheckFn) -> Check:
        CHECKS.append(Check(id_, step, title, body, best_practice))
        return CHECKS[-1]

    return register
