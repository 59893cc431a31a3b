"""The top component: the runbook's steps 1-6 (and 8's settings) as one resource graph.

Order comes from real dependencies: the health gate before the pool, the pool before the
client, the client's key and ceph-common on every node before the storage, the storage before
the VMs' disks, and the HA preflight before any HA resource. Independent work (the package on
each node, the preflight's checks of each node, one VM per node) runs in parallel. The health gate
and the HA preflight are checks evaluated on every preview and up; every other resource reads its
object back on refresh, so drift shows in ``pulumi preview``.
"""

from __future__ import annotations

import os
from typing import Any

import pulumi
import pulumi_proxmoxve as proxmoxve

from clients.pve.api import api_props
from components import pve_rights
from components.ceph_client import CephClient
from components.ceph_common import CephCommonPackage
from components.ceph_health import CephHealthGate
from components.ceph_pool import CephRbdPool
from components.ceph_scrub import CephScrubWindow
from components.config import ConfigError, StackConfig
from components.credentials import Credentials
from components.ha_options import HaOptions
from components.ha_preflight import HaPreflight
from components.ha_vm import HaVm, ha_group, ha_rule, resource_affinity_rule, sid, stack_template
from components.owners import Owners, owner_tag
from components.pve_storage import RbdStorage
from components.rbd_images import VmImages
from components.vm_changes import build_of


def require_host_keys(config: StackConfig, credentials: Credentials) -> None:
    """Every SSH address (the admin node, each PVE node) must have a host key in ssh.knownHostsFile.

    A config error, named by its key, stops the program before anything is declared.
    """
    problems: list[str] = []
    addresses = [(config.ceph.admin.host, config.ceph.admin.port, "ceph.admin.host")]
    addresses += [(node.address, node.ssh_port, f"proxmox.nodes[{i}].address") for i, node in enumerate(config.proxmox.nodes)]
    for host, port, key in addresses:
        try:
            credentials.require_host_key(host, port, key)
        except ConfigError as error:
            problems.extend(error.problems)
    if problems:
        raise pulumi.RunError(str(ConfigError(problems)))


def declared_objects(config: StackConfig) -> list[dict[str, Any]]:
    """The PVE objects the stack creates by name (components/owners.py): each VM, its HA resource,
    and the HA groups (PVE 8) or the node-affinity rules that have members (PVE 9)."""
    out: list[dict[str, Any]] = []
    for i, vm in enumerate(config.vms):
        # names as strings: the engine hands a dynamic provider every number as a float
        out.append({"kind": "vm", "name": str(vm.id), "entry": f"vms[{i}].id {vm.id} ({vm.name})"})
        if vm.ha:
            out.append({"kind": "haresource", "name": sid(vm), "entry": f"vms[{i}] ({vm.name}), its HA resource"})
    for i, template in enumerate(config.templates):
        out.append({"kind": "vm", "name": str(template.id), "entry": f"templates[{i}].id {template.id} ({template.name})"})
    used = {vm.affinity for vm in config.vms if vm.ha}
    for i, affinity in enumerate(config.ha.affinities):
        if config.ha.mode == "groups" or affinity.name in used:
            kind = "hagroup" if config.ha.mode == "groups" else "harule"
            out.append({"kind": kind, "name": affinity.name, "entry": f"ha.affinities[{i}].name"})
    for i, rule in enumerate(config.ha.resource_affinities):
        out.append({"kind": "harule", "name": rule.name, "entry": f"ha.resourceAffinities[{i}].name"})
    return out


def rights_input(config: StackConfig) -> dict[str, Any]:
    """What the token's rights check needs (components/pve_rights.py): the token's id (not its
    secret), the storage, and what each VM's rights depend on; and the cephx id of the program's
    Ceph commands (the policy pack reads both identities here)."""
    return {
        "tokenId": config.proxmox_api_token.get_secret_value().split("=", 1)[0],
        "cephId": config.ceph.admin.client_id,
        "storageId": config.storage.id,
        "vms": [rights.as_input() for rights in pve_rights.for_config(config)],
        "clusterOptions": config.ha.sets_cluster_options(),
    }


def outside_templates(config: StackConfig) -> list[dict[str, Any]]:
    """The clones of templates the stack does not make: the owner check finds each template in the cluster."""
    made = {t.id for t in config.templates}
    return [
        {"key": f"vms[{i}].clone", "template": vm.clone.template, "node": vm.clone.node, "vmNode": vm.node}
        for i, vm in enumerate(config.vms)
        if vm.clone and vm.clone.template not in made
    ]


class PveCephHa(pulumi.ComponentResource):
    """Proxmox VE VMs on external Ceph RBD, highly available (runbook steps 1-6 and 8)."""

    def __init__(self, name: str, config: StackConfig, credentials: Credentials, opts: pulumi.ResourceOptions | None = None):
        require_host_keys(config, credentials)  # before anything is declared
        super().__init__("pveceph:index:PveCephHa", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ceph = config.ceph
        admin = ceph.admin
        admin_ssh = credentials.connection(admin.host, admin.port, admin.user, ceph_id=admin.client_id)
        node_ssh = {node.name: credentials.connection(node.address, node.ssh_port, config.proxmox.ssh_user) for node in config.proxmox.nodes}
        token = pulumi.Output.secret(config.proxmox_api_token.get_secret_value())
        addresses = [node.address for node in config.proxmox.nodes]
        api = api_props(config.proxmox.endpoint, token, config.proxmox.verify_tls, credentials.ca_file, addresses, config.proxmox.api_timeout)
        self.provider = proxmoxve.Provider(
            f"{name}-pve",
            endpoint=config.proxmox.endpoint,
            api_token=token,
            insecure=not config.proxmox.verify_tls,
            # The cluster's nodes: the plugin built here reaches the API through any live one when the
            # endpoint's node is down (tools/proxmoxve/endpoints.go); the official plugin reads them as
            # the nodes' SSH addresses, which they are. Recorded with the provider in the state, so a
            # refresh (which runs with the recorded configuration) has them too.
            ssh=proxmoxve.ProviderSshArgs(nodes=[proxmoxve.ProviderSshNodeArgs(name=n.name, address=n.address, port=n.ssh_port) for n in config.proxmox.nodes]),
            opts=child,
        )
        with_pve = pulumi.ResourceOptions(parent=self, providers={"proxmoxve": self.provider})

        # Whose object is at each VM id and HA name the stack declares, before anything is changed:
        # the stack's own, or stop.
        owner = owner_tag(pulumi.get_project(), pulumi.get_stack())
        self.owners = Owners(
            f"{name}-owners",
            api,
            owner,
            declared_objects(config),
            os.getcwd(),
            rights=rights_input(config),
            builds=[build_of(i, vm, (config.ha.state == "started") if vm.ha else True) for i, vm in enumerate(config.vms)],
            clones=outside_templates(config),
            opts=child,
        )
        child = pulumi.ResourceOptions(parent=self, depends_on=[self.owners])

        # 1-1: the health gate, before anything in Ceph is touched.
        self.gate = CephHealthGate(f"{name}-health", ceph.pool, ceph.monitors, admin_ssh, opts=child)
        after_gate = pulumi.ResourceOptions(parent=self, depends_on=[self.gate])
        # 1-2/1-3: the pool; 2-1: the client (its caps name the pool: a real dependency).
        self.pool = CephRbdPool(f"{name}-rbd", ceph.pool, admin_ssh, adopt=config.adopt.pool, allow_deletion=config.allow_pool_deletion, opts=after_gate)
        self.client = CephClient(f"{name}-cephx", ceph.client, self.pool.pool_name, admin_ssh, adopt=config.adopt.client, opts=after_gate)
        # 8: scrubs outside business hours.
        if ceph.scrub_window is not None:
            CephScrubWindow(f"{name}-scrub", ceph.scrub_window, admin_ssh, owner, opts=after_gate)
        # 2-2: ceph-common on every node, in parallel.
        self.packages = [CephCommonPackage(f"{name}-ceph-common-{node}", node, conn, opts=child) for node, conn in node_ssh.items()]
        # 2-3: the storage, once the key exists and every node has the Ceph client.
        self.storage = RbdStorage(
            f"{name}-storage",
            config.storage,
            api=api,
            pool_name=self.pool.pool_name,
            monitors=ceph.monitors,
            username=self.client.client_name,
            key=self.client.key,
            nodes=[n.name for n in config.proxmox.nodes],
            adopt=config.adopt.storage,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.packages, self.client]),
        )
        # 4: HA services and quorum, before any HA resource.
        self.preflight = HaPreflight(f"{name}-ha-preflight", node_ssh, config.ha.mode, opts=child)
        # The HA manager's cluster-wide options (datacenter.cfg), when the config names them.
        if config.ha.sets_cluster_options():
            HaOptions(f"{name}-ha-options", config.ha, api, admin_ssh, owner, opts=child)
        # 5 (PVE 8): HA groups come before the resources that name them.
        groups: dict[str, pulumi.Resource] = {}
        if config.ha.mode == "groups":
            groups = {
                a.name: ha_group(
                    f"{name}-group-{a.name}", a, owner, pulumi.ResourceOptions.merge(with_pve, pulumi.ResourceOptions(depends_on=[self.preflight]))
                )
                for a in config.ha.affinities
            }
        # 3: the templates the stack makes (a cloud image imported onto the storage), before their clones.
        self.templates = {t.id: (stack_template(f"{name}-template-{t.name}", t, self.storage.storage_id, owner, with_pve), t.node) for t in config.templates}
        # 3 and 5: the VMs and their HA resources.
        self.vms = [
            HaVm(
                f"{name}-{vm.name}",
                vm,
                config.ha,
                self.storage.storage_id,
                group=groups.get(vm.affinity or ""),
                template=self.templates[vm.clone.template][0] if vm.clone and vm.clone.template in self.templates else None,
                template_node=self.templates[vm.clone.template][1] if vm.clone and vm.clone.template in self.templates else None,
                ha_depends_on=[self.preflight],
                create_timeout=config.proxmox.vm_create_timeout,
                owner=owner,
                opts=with_pve,
            )
            for vm in config.vms
        ]
        # 5 (PVE 9): node-affinity rules over the HA resources that name them.
        if config.ha.mode == "rules":
            for affinity in config.ha.affinities:
                members = [(vm, hv) for vm, hv in zip(config.vms, self.vms, strict=True) if vm.ha and vm.affinity == affinity.name]
                if members:
                    ha_rule(
                        f"{name}-rule-{affinity.name}",
                        affinity,
                        owner,
                        [sid(vm) for vm, _ in members],
                        pulumi.ResourceOptions.merge(with_pve, pulumi.ResourceOptions(depends_on=[hv.resource for _, hv in members if hv.resource])),
                    )

        # 5 (PVE 9): VMs kept together or apart, once their HA resources exist.
        by_name = {vm.name: hv for vm, hv in zip(config.vms, self.vms, strict=True)}
        for rule in config.ha.resource_affinities:
            sids = [sid(vm) for vm in config.vms if vm.name in rule.vms]
            resources = [r for n in rule.vms if (r := by_name[n].resource) is not None]
            resource_affinity_rule(
                f"{name}-affinity-{rule.name}",
                rule,
                owner,
                sids,
                pulumi.ResourceOptions.merge(with_pve, pulumi.ResourceOptions(depends_on=resources)),
            )

        # 3-2: `rbd ls rbd-pool` names every VM's disk, read from Ceph once the VMs exist.
        self.images = VmImages(
            f"{name}-images",
            self.pool.pool_name,
            [vm.id for vm in config.vms],
            admin_ssh,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[hv.machine for hv in self.vms]),
        )

        self.outputs: dict[str, Any] = {
            "storageId": self.storage.storage_id,
            "pool": self.pool.pool_name,
            "monitors": ceph.monitors,
            "clientName": self.client.client_name,
            "clientKey": self.client.key,
            "healthReport": self.gate.report,
            "ownerTag": owner,
            "vms": self.images.images.apply(
                lambda images: [
                    {"id": vm.id, "name": vm.name, "initialNode": vm.node, "haSid": sid(vm) if vm.ha else None, "images": (images or {}).get(str(vm.id), [])}
                    for vm in config.vms
                ]
            ),
        }
        self.register_outputs(self.outputs)
