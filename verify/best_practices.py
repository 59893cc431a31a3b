"""The runbook's step 8, its best practices: each a check (verify/finding.py) that warns, or fails
when the stack's config enforces it (``bestPractices.enforce``). Read-only."""

from __future__ import annotations

import ipaddress
from typing import Any

from clients import ceph_cli
from clients.pve import access, nodes_qemu
from clients.ssh import RemoteError
from components import pve_rights
from verify.finding import (
    ADMIN,
    QEMU_DEFAULT_CPU,
    WATCHDOG,
    CannotRun,
    Context,
    Finding,
    _each_node,
    check,
)
from verify.probe import ApiError

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
            conf = nodes_qemu.config(ctx.api, where["node"], vm.id)
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
    return pve_rights.for_config(ctx.config)


@check("pve-rights", "8", f"the API token holds the role {pve_rights.ROLE} on its paths and no more (docs/permissions.md)", best_practice="leastPrivilege")
def pve_rights_held(ctx: Context, f: Finding) -> None:
    """GET /access/permissions (the token's own, read-only): what the program needs and lacks, and what it holds beyond the role."""
    effective = access.permissions(ctx.api)
    token_id = ctx.config.proxmox_api_token.get_secret_value().split("=", 1)[0]
    vms = _vm_rights(ctx)
    options = ctx.config.ha.sets_cluster_options()
    lacking = pve_rights.missing(effective, pve_rights.needed(ctx.storage, vms, options))
    if lacking:
        f.problems.append(pve_rights.describe_missing(lacking, token_id, effective))
    extra = pve_rights.excess(effective, ctx.storage, vms, options)
    if extra:
        f.problems.append(pve_rights.describe_excess(extra, token_id))
    f.summary = (
        f"{token_id}: "
        + ("what the program needs" if not lacking else f"{len(lacking)} rights missing")
        + (f", {len(extra)} beyond the role" if extra else ", nothing more")
    )
    f.fix = "give the stack a privilege-separated token with only the role on its paths: " + "; ".join(
        pve_rights.setup_commands(token_id, ctx.storage, vms, options)
    )
