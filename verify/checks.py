"""The runbook's checks, each a function of what the cluster answers (:class:`verify.probe.Probe`)
and what the stack's config asks for. Read-only: every command here only reads.

Each check returns one :class:`Finding`: ``pass``, ``fail`` (with the problems and the fix),
``warn`` (a best practice not followed, and not enforced by ``bestPractices.enforce``), or
``error`` when it could not be asked at all (the Ceph admin node or the API unreachable).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from components import ceph_cli, ceph_common, ha_preflight, pve_rights
from components.ceph_cli import Caps, normalise_caps
from components.ceph_health import PEERING, STATUS_ARGV, CephHealth, Clock, SystemClock, settle
from components.config import BestPractice, StackConfig
from components.errors import OperatorError
from components.ha_vm import sid
from components.ssh import RemoteError, Result, Unreachable, render
from verify.probe import ADMIN, ApiError, Once, Probe

# qemu-server's default CPU model when a VM's config has no `cpu` (PVE::QemuServer::CPUConfig)
QEMU_DEFAULT_CPU = "kvm64"
# PVE's disk keys in a VM config (PVE::QemuServer::Drive): scsi0, virtio1, sata2, ide3, efidisk0, tpmstate0
DISK_KEY = re.compile(r"^(scsi|virtio|sata|ide|efidisk|tpmstate|unused)\d+$")
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
        return {int(r["vmid"]): r for r in self.api("cluster/resources") if r.get("type") == "qemu"}

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


# ---------------------------------------------------------------------- runbook 1: Ceph


@check("ceph-health", "1-1", "ceph -s: HEALTH_OK, every OSD up and in, the monitors in quorum")
def ceph_health(ctx: Context, f: Finding) -> None:
    health = ctx.ceph_health()
    f.summary = health.summary
    f.problems += health.problems
    if health.state == PEERING:
        f.fix = (
            "find the PGs that stay inactive on the admin node: ceph pg dump_stuck inactive, then ceph pg PGID query "
            "(recovery_state: what its peering waits for, often an OSD)"
        )
        return
    down = down_osds(ctx) if any(p.startswith("osd: ") for p in health.problems) else []
    if down:
        f.problems.append(f"down: {', '.join(down)} (ceph osd tree down)")
    f.fix = (
        "read `ceph health detail` on the admin node; start a down OSD (systemctl start ceph-osd@ID), mark it in (ceph osd in ID), "
        "clear flags set by hand (ceph osd unset noup); every monitor must run"
    )


OSD_TREE_DOWN = ["ceph", "osd", "tree", "down", "-f", "json"]


def down_osds(ctx: Context) -> list[str]:
    """The OSDs `ceph osd tree down` lists (with their host), asked only when `ceph status` counts
    some down; [] when it cannot tell (the count is in the problems already)."""
    try:
        tree = ctx.admin_json(OSD_TREE_DOWN)
    except (CannotRun, RemoteError):
        return []
    nodes = (tree or {}).get("nodes") or []
    hosts = {child: n["name"] for n in nodes if n.get("type") == "host" for child in n.get("children") or []}
    return [f"{n['name']} (host {hosts[n['id']]})" if n["id"] in hosts else str(n["name"]) for n in nodes if n.get("type") == "osd"]


def _pools(ctx: Context) -> list[dict[str, Any]]:
    return ctx.admin_json(ceph_cli.pool_list_detail())


@check("pool", "1-2", lambda c: f"ceph osd pool create {c.pool} {c.config.ceph.pool.pg_num}; rbd pool init {c.pool}")
def pool(ctx: Context, f: Finding) -> None:
    spec = ctx.config.ceph.pool
    found = next((p for p in _pools(ctx) if p["pool_name"] == spec.name), None)
    f.fix = "`pulumi up` creates the pool or puts back its settings (drift)"
    if found is None:
        f.problems.append(f"no pool {spec.name}")
        return
    pg_num = int(found.get("pg_num_target", found["pg_num"]))
    apps = sorted((found.get("application_metadata") or {}).keys())
    f.summary = f"pool {spec.name}: pg_num {pg_num}, size {found['size']}, application {','.join(apps) or 'none'}"
    if "rbd" not in apps:
        f.problems.append(f"pool {spec.name} has no rbd application (rbd pool init {spec.name} was not run or was undone)")
    if int(found["size"]) != spec.size:
        f.problems.append(f"pool {spec.name} has size {found['size']}, configured {spec.size} (ceph.pool.size)")
    if spec.autoscale_mode != "on" and pg_num != spec.pg_num:
        f.problems.append(f"pool {spec.name} has pg_num {pg_num}, configured {spec.pg_num} (ceph.pool.pgNum)")


@check("pg-budget", "1-2", "the pools' placement groups fit mon_max_pg_per_osd")
def pg_budget(ctx: Context, f: Finding) -> None:
    pools = _pools(ctx)
    max_per_osd = int(ctx.admin_ok(ceph_cli.config_get("mon", "mon_max_pg_per_osd")).strip() or 250)
    osd = ctx.ceph_status()["osdmap"]
    in_ = osd.get("osdmap", osd)["num_in_osds"]
    used = sum(int(p["pg_num"]) * int(p["size"]) for p in pools)
    budget = max_per_osd * max(in_, 1)
    f.summary = f"{used} of {budget} PG replicas (mon_max_pg_per_osd {max_per_osd} x {in_} OSDs in, {len(pools)} pools)"
    if used > budget:
        f.problems.append(f"{used} PG replicas exceed mon_max_pg_per_osd {max_per_osd} x {in_} OSDs in = {budget}")
        f.fix = "bring the OSDs back in, add OSDs, or lower the pools' pg_num (ceph.pool.pgNum for this stack's pool)"


# ---------------------------------------------------------------------- runbook 2: client, package, storage


def _wanted_caps(ctx: Context) -> Caps:
    return Caps.for_profile(ctx.config.ceph.client.caps, ctx.pool)


def _caps_text(caps: dict[str, str]) -> str:
    return " ".join(f"{k} '{v}'" for k, v in normalise_caps(caps).items())


@check("client", "2-1", lambda c: f"ceph auth get-or-create client.{c.config.ceph.client.name} " + _caps_text(_wanted_caps(c).as_dict()))
def client(ctx: Context, f: Finding) -> None:
    spec = ctx.config.ceph.client
    wanted = _wanted_caps(ctx)
    f.fix = f"`pulumi up` creates client.{spec.name} or sets its caps back (ceph.client.caps: {spec.caps})"
    result = ctx.admin(ceph_cli.auth_get(spec.name))
    if result.exit_status == ceph_cli.ENOENT:
        f.problems.append(f"client.{spec.name} does not exist")
        return
    if result.exit_status != 0:  # stderr only: stdout would hold the key
        raise CannotRun(f"`ceph auth get client.{spec.name}` on the Ceph admin node failed (exit {result.exit_status}): {result.stderr.strip()[-200:]}")
    try:
        caps = normalise_caps(json.loads(result.stdout)[0].get("caps", {}))  # the key in the answer is never kept
    except (ValueError, IndexError, AttributeError):
        raise CannotRun(f"`ceph auth get client.{spec.name}`: the answer is not the expected JSON") from None
    shown = _caps_text(caps)
    f.summary = f"client.{spec.name}: {shown}"
    if caps != normalise_caps(wanted.as_dict()):
        f.problems.append(f"client.{spec.name} has caps {shown}, configured {_caps_text(wanted.as_dict())}")


@check("ceph-common", "2-2", "apt install ceph-common on every node")
def ceph_common_installed(ctx: Context, f: Finding) -> None:
    package = ceph_common.PACKAGE
    seen = []
    for node, answer in _each_node(ctx, ceph_common.query_argv(package)).items():
        if isinstance(answer, RemoteError):
            f.problems.append(_unreached(node, answer))
            continue
        try:
            version = ceph_common.parse_query(node, package, answer.exit_status, answer.stdout, answer.stderr)
        except OperatorError as exc:
            f.problems.append(str(exc))
            continue
        if version is None:
            f.problems.append(f"{node}: {package} is not installed")
        else:
            seen.append(f"{node} {version}")
    f.summary = f"{package}: " + (", ".join(seen) or "on no node")
    f.fix = f"`pulumi up` installs it again (or apt install {package} on the node)"


@check("storage", "2-3", lambda c: f"storage {c.storage} (RBD, pool {c.pool}): Status = Active on every node")
def storage(ctx: Context, f: Finding) -> None:
    sid_, pool_, client_ = ctx.storage, ctx.pool, ctx.config.ceph.client.name
    f.fix = (
        f"check the storage's monitors (monhost) and its key, /etc/pve/priv/ceph/{sid_}.keyring, against `ceph auth get-key client.{client_}` "
        "on the admin node; `pulumi up` registers the storage and writes its key again"
    )
    try:
        conf = ctx.api(f"storage/{sid_}")
    except ApiError as exc:
        f.problems.append(f"storage {sid_} is not registered ({exc})")
        return
    if conf.get("type") != "rbd" or conf.get("pool") != pool_ or conf.get("username") != client_:
        f.problems.append(
            f"storage {sid_} is type {conf.get('type')}, pool {conf.get('pool')}, user {conf.get('username')}; configured rbd, pool {pool_}, user {client_}"
        )
    active = []
    for node in ctx.nodes:
        try:
            status = ctx.api(f"nodes/{node}/storage/{sid_}/status")
        except ApiError as exc:
            f.problems.append(f"{node}: {exc}")
            continue
        if int(status.get("active", 0)) != 1:
            f.problems.append(f"{node}: Status is not Active (PVE cannot open pool {pool_} as client.{client_})")
        else:
            active.append(node)
    f.summary = f"storage {sid_}: Active on {', '.join(active) or 'no node'}"


# ---------------------------------------------------------------------- runbook 3: the VMs' disks


def _disks(conf: dict[str, Any], storage: str) -> list[str]:
    """The images of a VM config's disks on ``storage``: ``scsi0: ceph-rbd:vm-101-disk-0,cache=...``."""
    out = []
    for key, value in conf.items():
        if DISK_KEY.match(key) and isinstance(value, str) and value.startswith(f"{storage}:"):
            out.append(value.split(",", 1)[0].split(":", 1)[1])
    return sorted(out)


@check("images", "3-2", lambda c: f"rbd ls {c.pool}: every VM's disks in the pool")
def images(ctx: Context, f: Finding) -> None:
    listed = set(json.loads(ctx.admin_ok(ceph_cli.rbd_ls(ctx.pool)) or "[]"))
    f.summary = f"rbd ls {ctx.pool}: {' '.join(sorted(listed)) or 'nothing'}"
    f.fix = "a VM disk missing from the pool is lost data: do not start the VM; restore the disk from a backup (qmrestore, or rbd import)"
    placed = ctx.vm_nodes()
    recorded = ctx.recorded_images()
    for vm in ctx.config.vms:
        where = placed.get(vm.id)
        if where is None:
            f.problems.append(f"VM {vm.id} ({vm.name}) does not exist in the cluster (`pulumi up` creates it)")
            continue
        disks = set(recorded.get(vm.id, []))  # what the stack's last up found (its `vms[].images` output)
        try:
            disks |= set(_disks(ctx.api(f"nodes/{where['node']}/qemu/{vm.id}/config"), ctx.storage))
        except ApiError as exc:
            if not disks:  # the VM's node down: its config cannot be read; the node's checks say why
                f.problems.append(f"VM {vm.id}: its config cannot be read ({exc}), and the stack's outputs name no image of it")
                continue
        if not disks:
            f.problems.append(f"VM {vm.id} has no disk on storage {ctx.storage}")
        for disk in sorted(disks):
            if disk not in listed:
                f.problems.append(f"VM {vm.id}: no {disk} in pool {ctx.pool}")


# ---------------------------------------------------------------------- runbook 4: HA services, quorum


@check("ha-services", "4-1", "systemctl status pve-ha-lrm pve-ha-crm: active (running) on every node")
def ha_services(ctx: Context, f: Finding) -> None:
    seen = []
    for node, answer in _each_node(ctx, ha_preflight.IS_ACTIVE).items():
        if isinstance(answer, RemoteError):
            f.problems.append(_unreached(node, answer))
            continue
        problems = ha_preflight.service_problems(node, answer)
        f.problems += problems
        if not problems:
            seen.append(node)
    f.summary = f"pve-ha-lrm, pve-ha-crm active on {', '.join(seen) or 'no node'}"
    f.fix = "on the node: systemctl start pve-ha-lrm pve-ha-crm, then journalctl -u pve-ha-lrm for why it stopped"


@check("ha-quorum", "4-2", "ha-manager status: quorum OK, a master, every node online")
def ha_quorum(ctx: Context, f: Finding) -> None:
    f.fix = "bring the node back (power, network, corosync); a node gone for good leaves the cluster (pvecm delnode) and proxmox.nodes"
    answer = ctx.ha_status()
    if answer is None:
        f.problems.append("no node answered `ha-manager status`")
        return
    source, text = answer
    status = ha_preflight.parse_ha_status(text)
    f.summary = f"{source}: quorum {status.quorum}, master {(status.master or 'none').split(' ')[0]}"
    if status.quorum != "OK":
        f.problems.append(f"quorum {status.quorum} (from {source})")
    if status.master is None:
        f.problems.append("no master (pve-ha-crm runs on no quorate node)")
    for node in ctx.nodes:
        why = status.not_online(node)
        if why:
            f.problems.append(f"{node} is not online: {why}")
    try:
        members = {str(m["name"]): int(m.get("online", 0)) for m in ctx.api("cluster/status") if m.get("type") == "node"}
    except ApiError as exc:
        f.problems.append(f"the cluster's membership cannot be read ({exc})")
        members = {}
    for node in ctx.nodes:
        if members and members.get(node) != 1:
            f.problems.append(f"{node} is offline in the cluster (pvecm status)" if node in members else f"{node} is not a member of the cluster")


# ---------------------------------------------------------------------- runbook 5: HA resources


@check(
    "ha-resources",
    "5",
    lambda c: f"ha-manager status: every HA VM {c.config.ha.state} (max restart {c.config.ha.max_restart}, max relocate {c.config.ha.max_relocate})",
)
def ha_resources(ctx: Context, f: Finding) -> None:
    ha = ctx.config.ha
    f.fix = f"`pulumi up` adds a missing HA resource and puts back its settings; a service in error: ha-manager set vm:ID --state {ha.state} after fixing the cause (journalctl -u pve-ha-lrm)"
    if not ctx.ha_vms:
        f.summary = "no HA VM in the config"
        return
    answer = ctx.ha_status()
    if answer is None:
        f.problems.append("no node answered `ha-manager status`")
        return
    services = ha_preflight.parse_ha_status(answer[1]).services
    resources = {str(r["sid"]): r for r in ctx.api("cluster/ha/resources")}
    seen = []
    for vm in ctx.ha_vms:
        name = sid(vm)
        if name not in resources:
            f.problems.append(f"{name} is not an HA resource")
            continue
        res = resources[name]
        for key, wanted in (("max_restart", ha.max_restart), ("max_relocate", ha.max_relocate)):
            if int(res.get(key, 1)) != wanted:
                f.problems.append(f"{name} has {key.replace('_', ' ')} {res.get(key)}, configured {wanted}")
        node, state = services.get(name, (None, None))
        if state != ha.state:
            f.problems.append(f"{name} is {state or 'not in ha-manager status'}, requested {ha.state}")
        else:
            seen.append(f"{name} {state} on {node}")
    f.summary = ", ".join(seen) or "none as requested"


@check("ha-placement", "5", "every HA VM runs on a node its affinity allows")
def ha_placement(ctx: Context, f: Finding) -> None:
    affinities = {a.name: a for a in ctx.config.ha.affinities}
    placed = ctx.vm_nodes()
    seen = []
    for vm in ctx.ha_vms:
        where = placed.get(vm.id)
        if where is None:
            f.problems.append(f"vm:{vm.id} does not exist in the cluster")
            continue
        node, state = str(where.get("node")), str(where.get("status"))
        affinity = affinities.get(vm.affinity or "")
        allowed = sorted(affinity.nodes) if affinity and affinity.strict else ctx.nodes
        if node not in allowed:
            f.problems.append(f"vm:{vm.id} runs on {node}, outside its strict affinity {affinity.name if affinity else ''} ({', '.join(allowed)})")
        elif ctx.config.ha.state == "started" and state != "running":
            f.problems.append(f"vm:{vm.id} is {state} on {node}, not running")
        else:
            seen.append(f"vm:{vm.id} {state} on {node}" + (f" (affinity {affinity.name}: {', '.join(sorted(affinity.nodes))})" if affinity else ""))
    f.summary = ", ".join(seen) or ("no HA VM in the config" if not ctx.ha_vms else "none")
    f.fix = "ha-manager migrate vm:ID NODE to a node the affinity allows, or fix the affinity (ha.affinities); see ha-manager status for a service in error"


# ---------------------------------------------------------------------- runbook 8: best practices


@check("cpu-type", "8", "one CPU type across the HA VMs", best_practice="cpuType")
def cpu_type(ctx: Context, f: Finding) -> None:
    placed = ctx.vm_nodes()
    types: dict[str, list[int]] = {}
    for vm in ctx.ha_vms:
        where = placed.get(vm.id)
        if where is None:
            continue  # reported by 3-2 and 5
        try:
            conf = ctx.api(f"nodes/{where['node']}/qemu/{vm.id}/config")
        except ApiError:
            continue
        cpu = str(conf.get("cpu") or QEMU_DEFAULT_CPU)
        model = next((p.split("=", 1)[1] for p in cpu.split(",") if p.startswith("cputype=")), cpu.split(",")[0])
        types.setdefault(model, []).append(vm.id)
    f.summary = "; ".join(f"{model}: VM {', '.join(map(str, ids))}" for model, ids in sorted(types.items())) or "no HA VM"
    if len(types) > 1:
        f.problems.append(f"the HA VMs use {len(types)} CPU types ({', '.join(sorted(types))}): a VM may not start on another node's CPU")
    if "host" in types:
        hosts = types["host"]
        f.problems.append(f"VM {', '.join(map(str, hosts))} {'use' if len(hosts) > 1 else 'uses'} CPU type host: it may not start on another node")
    f.fix = "give every HA VM one CPU model every node supports (vms[].cpuType, e.g. x86-64-v2-AES); `pulumi up` applies it"


@check("scrub-window", "8", "scrubs only in the configured window", best_practice="scrubWindow")
def scrub_window(ctx: Context, f: Finding) -> None:
    window = ctx.config.ceph.scrub_window
    begin = int(ctx.admin_ok(ceph_cli.config_get("osd", "osd_scrub_begin_hour")).strip() or 0)
    end = int(ctx.admin_ok(ceph_cli.config_get("osd", "osd_scrub_end_hour")).strip() or 0)
    f.summary = f"osd_scrub_begin_hour {begin}, osd_scrub_end_hour {end}"
    if window is None:
        if begin == end:
            f.problems.append("no scrub window: scrubs may run during business hours")
            f.fix = "set ceph.scrubWindow (e.g. beginHour 22, endHour 6) and run `pulumi up`"
        return
    if (begin, end) != (window.begin_hour, window.end_hour):
        f.problems.append(f"the scrub window is {begin}-{end}, configured {window.begin_hour}-{window.end_hour} (ceph.scrubWindow)")
        f.fix = "`pulumi up` sets it back"


@check("watchdog", "8", f"fencing armed: {WATCHDOG} active on every node", best_practice="watchdog")
def watchdog(ctx: Context, f: Finding) -> None:
    seen = []
    for node, answer in _each_node(ctx, ["systemctl", "is-active", WATCHDOG]).items():
        if isinstance(answer, RemoteError):
            continue  # an unreachable node fails 4-1 and 4-2
        state = answer.stdout.strip() or f"unknown (exit {answer.exit_status})"
        if state != "active":
            f.problems.append(f"{node}: {WATCHDOG} is {state}: a node that loses quorum will not be fenced")
        else:
            seen.append(node)
    f.summary = f"{WATCHDOG} active on {', '.join(seen) or 'no node'}"
    f.fix = f"systemctl start {WATCHDOG} on the node (and check the watchdog module: /etc/default/pve-ha-manager)"


def _interfaces(ctx: Context) -> tuple[dict[str, tuple[str, dict[str, Any]]], list[str]]:
    """host -> (Ceph-facing interface, its link), for the admin node and every node that answers."""
    out, notes = {}, []
    for host in [ADMIN, *ctx.nodes]:
        try:
            out[host] = ctx.ceph_interface(host)
        except RemoteError as exc:
            if host == ADMIN:
                raise CannotRun(f"the Ceph admin node: {exc}") from None
            notes.append(f"{host} not checked ({exc})")
    return out, notes


@check("mtu", "8", "one MTU on the Ceph network (the nodes and the Ceph hosts)", best_practice="mtu")
def mtu(ctx: Context, f: Finding) -> None:
    found, notes = _interfaces(ctx)
    mtus: dict[int, list[str]] = {}
    for host, (dev, link) in found.items():
        mtus.setdefault(int(link.get("mtu", 0)), []).append(f"{host} {dev}")
    f.summary = "; ".join(f"MTU {m}: {', '.join(hosts)}" for m, hosts in sorted(mtus.items())) + "".join(f"; {n}" for n in notes)
    if len(mtus) > 1:
        f.problems.append(f"{len(mtus)} MTUs on the Ceph network: " + "; ".join(f"{m} on {', '.join(h)}" for m, h in sorted(mtus.items())))
    f.fix = "set one MTU on every Ceph-facing interface, switches included (e.g. 9000 end to end), in /etc/network/interfaces"


@check("ceph-networks", "8", "Ceph's public and cluster networks set and separate", best_practice="cephNetworks")
def ceph_networks(ctx: Context, f: Finding) -> None:
    values = {}
    for key in ("public_network", "cluster_network"):
        values[key] = ctx.admin_ok(ceph_cli.config_get("mon", key)).strip()
    f.summary = f"public_network {values['public_network'] or '(not set)'}, cluster_network {values['cluster_network'] or '(not set)'}"
    f.fix = "ceph config set global public_network <cidr> and cluster_network <another cidr> (separate links), then restart the OSDs"
    nets: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
    for key, value in values.items():
        if not value:
            f.problems.append(f"{key} is not set")
            continue
        try:
            nets[key] = [ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()]
        except ValueError:
            f.problems.append(f"{key} = {value!r} is not a network")
    if len(nets) == 2 and any(a.overlaps(b) for a in nets["public_network"] for b in nets["cluster_network"] if a.version == b.version):
        f.problems.append("public_network and cluster_network overlap: replication shares the clients' network")


def _bridges(ctx: Context) -> list[str]:
    return sorted({vm.bridge for vm in ctx.config.vms} or {"vmbr0"})


@check("bridge", "8", lambda c: f"the Ceph network apart from the VMs' bridge ({', '.join(_bridges(c))})", best_practice="bridge")
def bridge(ctx: Context, f: Finding) -> None:
    bridges = _bridges(ctx)
    found, notes = _interfaces(ctx)
    seen = []
    for host, (dev, link) in found.items():
        if host == ADMIN:
            continue
        master = link.get("master")
        if dev in bridges or master in bridges:
            f.problems.append(f"{host}: Ceph traffic goes through {dev}" + (f", a port of {master}" if master in bridges else "") + ": the VMs' bridge")
        else:
            seen.append(f"{host} {dev}")
    f.summary = "Ceph via " + (", ".join(seen) or "no node apart") + "".join(f"; {n}" for n in notes)
    f.fix = "give Ceph its own interface (or VLAN) on every node, not a port of the VMs' bridge, in /etc/network/interfaces"


def _vm_rights(ctx: Context) -> list[pve_rights.VmRights]:
    return [pve_rights.VmRights(vm.id, vm.name, vm.bridge, vm.iso, vm.ha) for vm in ctx.config.vms]


@check("pve-rights", "8", f"the API token holds the role {pve_rights.ROLE} on its paths and no more (README, Permissions)", best_practice="leastPrivilege")
def pve_rights_held(ctx: Context, f: Finding) -> None:
    """GET /access/permissions (the token's own, read-only): what the program needs and lacks, and what it holds beyond the role."""
    effective = ctx.api("access/permissions")
    token_id = ctx.config.proxmox_api_token.get_secret_value().split("=", 1)[0]
    vms = _vm_rights(ctx)
    lacking = pve_rights.missing(effective, pve_rights.needed(ctx.storage, vms))
    if lacking:
        f.problems.append(pve_rights.describe_missing(lacking, token_id, effective))
    extra = pve_rights.excess(effective, ctx.storage, vms)
    if extra:
        f.problems.append(pve_rights.describe_excess(extra, token_id))
    f.summary = (
        f"{token_id}: "
        + ("what the program needs" if not lacking else f"{len(lacking)} rights missing")
        + (f", {len(extra)} beyond the role" if extra else ", nothing more")
    )
    f.fix = "give the stack a privilege-separated token with only the role on its paths: " + "; ".join(pve_rights.setup_commands(token_id, ctx.storage, vms))
