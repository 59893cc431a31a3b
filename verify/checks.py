"""The runbook's checks, each a function of what the cluster answers (:class:`verify.probe.Probe`)
and what the stack's config asks for. Read-only: every command here only reads.

Each check returns one :class:`Finding`: ``pass``, ``fail`` (with the problems and the fix),
``warn`` (a best practice not followed, and not enforced by ``bestPractices.enforce``), or
``error`` when it could not be asked at all (the Ceph admin node or the API unreachable).
"""

from __future__ import annotations

import json
from typing import Any

from clients import ceph_cli
from clients.ceph_cli import Caps, normalise_caps
from clients.pve import cluster, cluster_ha, nodes_qemu, nodes_storage
from clients.pve import storage as pve_storage
from clients.pve.cluster_ha import sid
from clients.ssh import RemoteError
from components import ceph_common, ha_options, ha_preflight
from components.ceph_health import PEERING
from components.errors import OperatorError
from verify.finding import (
    CHECKS,
    CannotRun,
    Context,
    Finding,
    _each_node,
    _unreached,
    check,
)
from verify.probe import ApiError

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
        conf = pve_storage.config(ctx.api, sid_)
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
            status = nodes_storage.status(ctx.api, node, sid_)
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
    """The images of a VM config's disks on ``storage``: ``scsi0: ceph-rbd:vm-101-disk-0,cache=...``;
    a linked clone's volume ``base-970-disk-0/vm-971-disk-0`` is the image ``vm-971-disk-0``
    (RBDPlugin.pm parse_volname: the base image, then the clone's own)."""
    return [volume.split(":", 1)[1].rsplit("/", 1)[-1] for volume in nodes_qemu.volumes_on(conf, storage)]


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
            disks |= set(_disks(nodes_qemu.config(ctx.api, where["node"], vm.id), ctx.storage))
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
        members = {str(m["name"]): int(m.get("online", 0)) for m in cluster.status(ctx.api) if m.get("type") == "node"}
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
    resources = {str(r["sid"]): r for r in cluster_ha.resources(ctx.api)}
    seen = []
    for vm in ctx.ha_vms:
        name = sid(vm.id)
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


@check(
    "ha-resource-affinity",
    "5",
    lambda c: "; ".join(
        f"{r.name}: {' and '.join(sid(v.id) for v in c.config.vms if v.name in r.vms)} on {'one node' if r.keep == 'together' else 'different nodes'}"
        for r in c.config.ha.resource_affinities
    )
    or "no VMs kept together or apart (ha.resourceAffinities)",
)
def ha_resource_affinity(ctx: Context, f: Finding) -> None:
    """Issue #26: each rule of ha.resourceAffinities is in PVE, not dropped as infeasible, and its VMs
    run where it says: apart on different nodes, together on one."""
    wanted = ctx.config.ha.resource_affinities
    f.fix = "`pulumi up` puts a missing rule back; a rule PVE lists with errors is dropped by the HA manager: fix what it names; ha-manager migrate vm:ID NODE moves a VM"
    if not wanted:
        f.summary = "no VMs kept together or apart"
        return
    ids = {vm.name: vm.id for vm in ctx.config.vms}
    present = {str(r.get("rule")): r for r in cluster_ha.rules(ctx.api)}
    placed = ctx.vm_nodes()
    seen = []
    for rule in wanted:
        sids = [sid(ids[name]) for name in rule.vms]
        found = present.get(rule.name)
        if found is None or found.get("type") != "resource-affinity":
            f.problems.append(f"HA rule {rule.name} (resource-affinity) does not exist")
            continue
        if found.get("errors"):
            f.problems.append(f"HA rule {rule.name} is dropped by the HA manager: {'; '.join(str(v) for v in found['errors'].values())}")
        if found.get("disable"):
            f.problems.append(f"HA rule {rule.name} is disabled")
        where = {s: str((placed.get(ids[name]) or {}).get("node") or "nowhere") for s, name in zip(sids, rule.vms, strict=True)}
        text = " and ".join(f"{s} ({n})" for s, n in where.items())
        nodes = set(where.values())
        if rule.keep == "apart" and len(nodes) < len(where):
            f.problems.append(f"{text} share a node; {rule.name} keeps them apart")
        elif rule.keep == "together" and len(nodes) > 1:
            f.problems.append(f"{text} are on different nodes; {rule.name} keeps them together")
        else:
            seen.append(f"{' and '.join(where)} on {'different nodes' if rule.keep == 'apart' else 'one node'} ({', '.join(sorted(nodes))})")
    f.summary = "; ".join(seen) or "none as configured"


# What each HA shutdown policy does to a node's HA VMs on a graceful reboot or shutdown (LRM.pm shutdown_request).
SHUTDOWN_POLICIES = {
    "conditional": "a reboot stops and freezes them (they start again on the node), a poweroff stops them for recovery elsewhere",
    "freeze": "stopped and frozen: they start again on the node when it is back",
    "failover": "stopped, not frozen: recovered elsewhere unless the node is back within a minute",
    "migrate": "live-migrated away first (maintenance mode), moved back when the node is up",
}


# How the HA manager picks a node to start or recover a service on (datacenter.cfg crs: ha=...).
CRS = {
    "basic": "HA places a service on the node with the fewest HA services",
    "static": "HA places a service where the configured CPUs and memory of the services leave most room",
    "dynamic": "HA places a service by the measured CPU and memory usage",
}


@check("ha-shutdown-policy", "5", "datacenter.cfg ha: shutdown_policy, what a node's graceful reboot does to its HA VMs, and the CRS mode")
def ha_shutdown_policy(ctx: Context, f: Finding) -> None:
    """Issue #26: the cluster's HA shutdown policy and scheduler, held against ha.shutdownPolicy,
    ha.crs and ha.rebalanceOnStart when the config sets them (components/ha_options.py)."""
    f.fix = "`pulumi up` sets what the config names; or Datacenter -> Options -> HA Settings, pvesh set /cluster/options --ha shutdown_policy=<policy>"
    try:
        answer = cluster.options(ctx.api)
    except ApiError as exc:
        f.problems.append(f"the cluster's options cannot be read ({exc})")
        return
    seen = ha_options.effective(answer)
    asked = ha_options.wanted(ha_options.from_config(ctx.config.ha))
    f.problems += [
        f"{ha_options.describe({k: seen[k]})} on the cluster, the config asks for {ha_options.describe({k: v})}" for k, v in asked.items() if seen[k] != v
    ]
    unset = [field for field, (key, sub, _, _) in ha_options.FIELDS.items() if ha_options.parsed(answer.get(key)).get(sub) is None]
    policy, scheduler = seen["shutdownPolicy"], seen["crs"]
    shown = policy + (" (PVE's default: not set)" if "shutdownPolicy" in unset else "")
    crs = f"crs ha={scheduler}" + (" (PVE's default)" if "crs" in unset else "") + (", rebalance on start" if seen["rebalanceOnStart"] else "")
    effect = SHUTDOWN_POLICIES.get(policy, "unknown to this version")
    f.summary = f"shutdown_policy {shown}: on a graceful reboot or shutdown {effect}; {crs}: {CRS.get(scheduler, 'not known here')}"


# runbook 8, registered after 1-5
from verify import best_practices  # noqa: E402

__all__ = ["CHECKS", "Context", "Finding", "best_practices"]
