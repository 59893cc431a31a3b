"""The one source of truth for every input of the program.

The stack config (``Pulumi.<stack>.yaml``) is read into :class:`StackConfig`, a pydantic v2
model, and validated before any resource is declared. Every error names the config key, the
bad value, the rule and the fix; a secret value is never shown.

Keys are camelCase in YAML (``ceph.pool.pgNum``) and snake_case in Python (``ceph.pool.pg_num``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from components import ha_affinity
from components.config_base import (
    API_TOKEN,
    ENDPOINT,
    PROJECT,
    SECRET_KEYS,
    Bool,
    ClientName,
    ConfigError,
    HaName,
    Host,
    Int,
    Model,
    NodeName,
    PoolName,
    Port,
    StorageId,
    UserName,
    _entries,
    _pattern,
    _true_or_false,
    _whole_number,
)
from components.config_vm import NicSpec, TemplateSpec, VmName, VmSpec

__all__ = ["PROJECT", "SECRET_KEYS", "ConfigError", "NicSpec", "TemplateSpec", "VmSpec"]


class SshEndpoint(Model):
    host: Host = Field(description="SSH address (IP or host name)")
    port: Port = Field(default=22, description="SSH port")
    user: UserName = Field(default="root", description="SSH user")


class CephAdminSpec(SshEndpoint):
    """The Ceph admin node: where the program's Ceph commands run, and as which cephx identity."""

    client_id: ClientName = Field(
        default="admin",
        description="cephx id the program's Ceph commands use (`ceph --id <id>`, keyring /etc/ceph/ceph.client.<id>.keyring); "
        "`admin` is the admin keyring, least privilege is a client with the caps of docs/permissions.md",
    )


class PoolSpec(Model):
    """Runbook 1-2: ``ceph osd pool create rbd-pool 256``; 1-3: ``rbd pool init rbd-pool``."""

    name: PoolName = Field(default="rbd-pool", description="pool name")
    pg_num: Int = Field(default=256, ge=1, le=32768, description="placement groups, a power of two; the initial value when the autoscaler is on")
    size: Int = Field(default=3, ge=1, le=10, description="replicas")
    autoscale_mode: Literal["on", "off", "warn"] = Field(
        default="off", description="pg_autoscale_mode; with `on`, pg_num changes by the autoscaler are not drift"
    )

    @field_validator("pg_num")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            lower = 1 << (value.bit_length() - 1)
            raise ValueError(f"must be a power of two (e.g. {lower} or {lower * 2})")
        return value


class ClientSpec(Model):
    """Runbook 2-1: the cephx client Proxmox uses."""

    name: ClientName = Field(default="proxmox", description="cephx client name without `client.`")
    caps: Literal["profile-rbd", "runbook"] = Field(
        default="profile-rbd",
        description="`profile-rbd`: mon 'profile rbd' osd 'profile rbd pool=<pool>'; `runbook`: mon 'allow r' osd 'allow rwx pool=<pool>' (warns: no blocklist permission)",
    )


class ScrubWindow(Model):
    """Runbook 8: scrubs outside business hours (``osd_scrub_begin_hour``/``osd_scrub_end_hour``)."""

    begin_hour: Int = Field(default=22, ge=0, le=23, description="osd_scrub_begin_hour")
    end_hour: Int = Field(default=6, ge=0, le=23, description="osd_scrub_end_hour")

    @model_validator(mode="after")
    def _not_empty(self) -> ScrubWindow:
        if self.begin_hour == self.end_hour:
            raise ValueError("beginHour and endHour must differ (an empty window would stop scrubbing)")
        return self


class CephSpec(Model):
    admin: CephAdminSpec = Field(description="the Ceph admin node (holds the keyring of ceph.admin.clientId)")
    monitors: list[Host] = Field(min_length=1, description="monitor addresses, as the storage's monhost")
    pool: PoolSpec = PoolSpec()
    client: ClientSpec = ClientSpec()
    scrub_window: ScrubWindow | None = ScrubWindow()

    @field_validator("monitors")
    @classmethod
    def _unique_monitors(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each monitor must appear once")
        return value


class SshSpec(Model):
    """How the program reaches the Ceph admin node and the PVE nodes' shells."""

    private_key_file: str | None = Field(default="~/.ssh/id_ed25519", description="private key file, used unless the secret sshPrivateKey is set")
    known_hosts_file: str = Field(default="~/.ssh/known_hosts", description="host keys of every SSH address; an unknown or changed key is refused")
    command_timeout: Int = Field(
        default=120, ge=5, le=3600, description="seconds one Ceph command may take before the run stops with a timeout (a slow or unreachable cluster)"
    )


class NodeSpec(Model):
    name: NodeName = Field(description="PVE node name")
    address: Host = Field(description="the node's address: SSH, and its API (on the endpoint's port) when the endpoint does not answer")
    ssh_port: Port = Field(default=22, description="the node's SSH port")


class ProxmoxSpec(Model):
    endpoint: Annotated[str, _pattern(ENDPOINT, "must be the API's https URL", "e.g. https://10.10.10.11:8006")] = Field(
        description="the API's URL, tried first; every node's address is its fallback"
    )
    verify_tls: Bool = Field(default=True, description="check the API's TLS certificate")
    ca_file: str | None = Field(default=None, description="CA bundle for the API (also export SSL_CERT_FILE for the proxmoxve plugin)")
    ssh_user: UserName = Field(default="root", description="SSH user on the nodes")
    nodes: list[NodeSpec] = Field(min_length=1, description="every node of the cluster")
    vm_create_timeout: Int = Field(
        default=1800, ge=10, le=86_400, description="seconds the plugin waits for a VM's create (its API calls and tasks) before it gives up"
    )
    api_timeout: Int = Field(
        default=30,
        ge=5,
        le=600,
        description="seconds each of the program's own API calls (the storage, the ownership and rights checks) waits for an answer before it fails naming the call",
    )

    @field_validator("nodes")
    @classmethod
    def _unique_nodes(cls, value: list[NodeSpec]) -> list[NodeSpec]:
        names = [n.name for n in value]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"node names must be unique; {', '.join(duplicated)} appears more than once")
        return value


class StorageSpec(Model):
    """Runbook 2-3: Datacenter → Storage → Add → RBD."""

    id: StorageId = Field(default="ceph-rbd", description="PVE storage ID")
    content: list[Literal["images", "rootdir"]] = Field(default=["images"], description="content types; must include images (Disk image)")

    @field_validator("content")
    @classmethod
    def _images(cls, value: list[str]) -> list[str]:
        if "images" not in value:
            raise ValueError("must include 'images' (Disk image): VM disks live on this storage")
        return sorted(set(value))


class AffinitySpec(Model):
    """Where HA prefers to run a VM: an HA group (PVE 8) or a node-affinity rule (PVE 9)."""

    name: HaName = Field(description="HA group (groups mode) or rule (rules mode) name")
    nodes: dict[NodeName, Annotated[Int, Field(ge=0, le=1000)]] = Field(min_length=1, description="node → priority (higher wins)")
    strict: Bool = Field(default=False, description="only these nodes (group `restricted` / rule `strict`)")
    failback: Bool = Field(default=True, description="move back to the preferred node when it returns")


class ResourceAffinitySpec(Model):
    """PVE 9: VMs kept together on one node or apart on different nodes, after a failover too (an
    HA rule of type resource-affinity; pve-ha-manager Rules/ResourceAffinity.pm)."""

    name: HaName = Field(description="the HA rule's name (one namespace with ha.affinities)")
    vms: list[VmName] = Field(description="the HA VMs it keeps together or apart, by vms[].name (two or more)")
    keep: Literal["together", "apart"] = Field(description="`together` (positive: one node) or `apart` (negative: each on its own node)")

    @field_validator("vms")
    @classmethod
    def _two_or_more(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a VM twice; name each VM once")
        if len(value) < 2:
            raise ValueError("must name two or more VMs: PVE drops a rule of one (it keeps nothing together or apart)")
        return value


class HaSpec(Model):
    """Runbook 5: the HA resource (max restart/relocate) and an optional group or rule."""

    mode: Literal["groups", "rules"] = Field(default="rules", description="`groups` for PVE 8, `rules` for PVE 9")
    max_restart: Int = Field(default=1, ge=0, le=10, description="max restart")
    max_relocate: Int = Field(default=1, ge=0, le=10, description="max relocate")
    state: Literal["started", "stopped", "ignored", "disabled"] = Field(default="started", description="requested HA state")
    affinities: list[AffinitySpec] = Field(default=[], description="HA groups or node-affinity rules")
    resource_affinities: list[ResourceAffinitySpec] = Field(
        default=[], description="PVE 9 (rules mode): VMs kept together or apart (HA rules of type resource-affinity)"
    )
    shutdown_policy: Literal["freeze", "failover", "migrate", "conditional"] | None = Field(
        default=None,
        description="datacenter.cfg `ha: shutdown_policy`: what a graceful node shutdown or reboot does with its HA VMs "
        "(a cluster-wide setting: one stack owns it; unset: not the stack's, PVE's default `conditional`)",
    )
    crs: Literal["basic", "static"] | None = Field(
        default=None,
        description="datacenter.cfg `crs: ha`: the HA scheduler, `basic` (fewest services) or `static` (the VMs' memory and CPUs "
        "against the nodes'); cluster-wide, one stack owns it",
    )
    rebalance_on_start: Bool | None = Field(
        default=None,
        description="datacenter.cfg `crs: ha-rebalance-on-start`: a VM asked to start first moves to the scheduler's best node; cluster-wide",
    )

    def sets_cluster_options(self) -> bool:
        """Whether the stack sets datacenter.cfg's HA options (components/ha_options.py): Sys.Modify on /."""
        return any(v is not None for v in (self.shutdown_policy, self.crs, self.rebalance_on_start))


class AdoptSpec(Model):
    """Adopt objects that already exist instead of refusing to touch them."""

    pool: Bool = Field(default=False, description="adopt an existing pool")
    client: Bool = Field(default=False, description="adopt an existing cephx client (its caps are set)")
    storage: Bool = Field(default=False, description="adopt an existing PVE storage")


# Runbook 8's best practices that `python -m verify` checks, by the names bestPractices.enforce takes.
BestPractice = Literal["cpuType", "scrubWindow", "watchdog", "mtu", "cephNetworks", "bridge", "leastPrivilege"]


class BestPracticesSpec(Model):
    """Runbook 8, as `python -m verify` checks it: a finding is a warning unless enforced here."""

    enforce: list[BestPractice] = Field(
        default=[],
        description="best practices whose finding fails `python -m verify` (exit 1) instead of warning: "
        "cpuType (one CPU type across HA VMs), scrubWindow, watchdog (watchdog-mux active), mtu (one MTU on the Ceph network), "
        "cephNetworks (public and cluster networks set and separate), bridge (Ceph network apart from the VMs' bridge), "
        "leastPrivilege (the API token holds the role PulumiCephHA on its documented paths and no more)",
    )


class StackConfig(Model):
    ceph: CephSpec
    ssh: SshSpec = SshSpec()
    proxmox: ProxmoxSpec
    storage: StorageSpec = StorageSpec()
    vms: list[VmSpec] = Field(default=[], description="the VMs, each on the RBD storage and (by default) HA")
    templates: list[TemplateSpec] = Field(default=[], description="templates the stack makes from a cloud image, for `vms[].clone`")
    ha: HaSpec = HaSpec()
    adopt: AdoptSpec = AdoptSpec()
    best_practices: BestPracticesSpec = BestPracticesSpec()
    allow_pool_deletion: Bool = Field(default=False, description="delete the pool on destroy (refused while it holds images)")
    # Secrets: set with `pulumi config set --secret`.
    proxmox_api_token: SecretStr
    ssh_private_key: SecretStr | None = None

    @field_validator("proxmox_api_token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not API_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("must be a PVE API token 'USER@REALM!TOKENID=SECRET', e.g. root@pam!pulumi=<uuid>")
        return value


def _valid(check: Any, value: Any) -> Any:
    """VALUE as CHECK reads it, or None when the field check refuses it (that problem is reported there)."""
    try:
        return check(value)
    except ValueError:
        return None


def _cross_checks(raw: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """The rules between keys: unique VM ids and names, the nodes and affinities they name, one CPU
    type across HA VMs, the nodes the affinities name, unique affinity names.

    They read the raw config, each value as its field reads it, and skip a value its field
    refuses, so they run in the same pass as the field checks: an operator fixes everything at
    once. (`validate` drops a rule's problem at a key whose field is already refused.)"""
    problems: list[tuple[str, Any, str]] = []
    nodes = sorted({str(n["name"]) for _, n in _entries(raw, "proxmox", "nodes") if isinstance(n.get("name"), str)})
    known_nodes = f"must be one of proxmox.nodes ({', '.join(nodes)})"
    affinities = _entries(raw, "ha", "affinities")
    affinity_names = {str(a["name"]) for _, a in affinities if isinstance(a.get("name"), str)}
    vms = _entries(raw, "vms")
    ids = [_valid(_whole_number, vm.get("id")) for _, vm in vms]
    names = [vm.get("name") for _, vm in vms]
    ha_cpu: dict[int, str] = {}
    for (i, vm), vm_id, name in zip(vms, ids, names, strict=True):
        if vm_id is not None and ids.count(vm_id) > 1:
            problems.append((f"vms[{i}].id", vm_id, "VM ids must be unique; give each VM its own id"))
        if isinstance(name, str) and names.count(name) > 1:
            problems.append((f"vms[{i}].name", name, "VM names must be unique; give each VM its own name"))
        node = vm.get("node")
        if nodes and isinstance(node, str) and node not in nodes:
            problems.append((f"vms[{i}].node", node, known_nodes))
        affinity = vm.get("affinity")
        if isinstance(affinity, str) and affinity not in affinity_names:
            problems.append((f"vms[{i}].affinity", affinity, f"must name an entry of ha.affinities ({', '.join(sorted(affinity_names)) or 'none defined'})"))
        cpu_type = vm.get("cpuType", VmSpec.model_fields["cpu_type"].default)
        if _valid(_true_or_false, vm.get("ha", True)) and isinstance(cpu_type, str):
            ha_cpu[i] = cpu_type
            if cpu_type == "host":
                rule = "an HA VM must not use 'host': it may not start on another node's CPU; use one model on every node, e.g. x86-64-v2-AES"
                problems.append((f"vms[{i}].cpuType", cpu_type, rule))
    first = sorted(set(ha_cpu.values()))[:1]
    if len(set(ha_cpu.values())) > 1:
        problems.extend(
            (f"vms[{i}].cpuType", cpu, f"every HA VM must use one CPU type (runbook 8); others use {first[0]}") for i, cpu in ha_cpu.items() if cpu != first[0]
        )
    problems += _vm_build_checks(raw, vms, ids, nodes, known_nodes)
    problems += ha_affinity.resource_affinity_checks(raw, vms, nodes)
    seen: set[str] = set()
    for i, affinity in affinities:
        members = affinity.get("nodes")
        for node in members if isinstance(members, Mapping) and nodes else ():
            if node not in nodes:
                problems.append((f"ha.affinities[{i}].nodes.{node}", node, known_nodes))
        name = affinity.get("name")
        if isinstance(name, str) and name in seen:
            problems.append((f"ha.affinities[{i}].name", name, "HA group/rule names must be unique"))
        seen.add(str(name))
    return problems


def _vm_build_checks(
    raw: Mapping[str, Any], vms: list[tuple[int, Mapping[str, Any]]], ids: list[Any], nodes: list[str], known_nodes: str
) -> list[tuple[str, Any, str]]:
    """How each VM is built: one way per part (diskGb or disks, bridge or nics, an ISO or a clone),
    the templates' ids apart from the VMs' and unique, a clone's template not one of the VMs, MACs unique."""
    problems: list[tuple[str, Any, str]] = []
    templates = _entries(raw, "templates")
    template_ids = [_valid(_whole_number, t.get("id")) for _, t in templates]
    for i, template in templates:
        tid = template_ids[i]
        if tid is not None and (template_ids.count(tid) > 1 or tid in ids):
            problems.append((f"templates[{i}].id", tid, "template ids must be unique and apart from the VMs' ids; give it its own id"))
        node = template.get("node")
        if nodes and isinstance(node, str) and node not in nodes:
            problems.append((f"templates[{i}].node", node, known_nodes))
    macs: list[str] = []
    for i, vm in vms:
        for one, other, fix in (
            ("diskGb", "disks", "set the size of scsi0 as disks[0].sizeGb"),
            ("bridge", "nics", "set net0's bridge as nics[0].bridge"),
            ("iso", "clone", "a clone boots the template's disk; drop the iso"),
        ):
            if vm.get(one) is not None and vm.get(other) is not None:
                problems.append((f"vms[{i}].{one}", vm[one], f"is set with vms[{i}].{other}: {fix}"))
        clone = vm.get("clone")
        source = _valid(_whole_number, clone.get("template")) if isinstance(clone, Mapping) else None
        if source is not None and source in ids:
            rule = "must be a template's id: it is one of vms (a VM, not a template); name an existing template or one of templates"
            problems.append((f"vms[{i}].clone.template", source, rule))
        for n, nic in _entries(vm, "nics"):
            mac = nic.get("mac")
            if isinstance(mac, str):
                if mac in macs:
                    problems.append((f"vms[{i}].nics[{n}].mac", mac, "MAC addresses must be unique; drop it to have one derived"))
                macs.append(mac)
    return problems


def _key_path(loc: tuple[int | str, ...]) -> str:
    """``('ceph', 'pool', 'pg_num')`` → ``ceph.pool.pgNum``; list positions as ``[i]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-after") or part.startswith("constrained-str"):
            continue
        else:
            name = part if not part.islower() or "_" not in part else to_camel(part)
            out += f".{name}" if out else name
    return out


def _show(key: str, value: Any) -> str:
    root = key.split(".")[0].split("[")[0]
    if root in SECRET_KEYS:
        return "<secret>"
    if isinstance(value, str):
        # quoted when it would read wrong bare, and always when it holds a control character (\r, NUL,
        # ESC): the operator's terminal must show them escaped, never act on them
        return repr(value) if value == "" or value != value.strip() or not value.isprintable() or any(c in value for c in " '\"") else value
    return repr(value) if isinstance(value, dict | list) else str(value)


def _rule(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known key; check the spelling against the config reference, docs/configuration.md"
    bounds = {"greater_than_equal": ("ge", ">="), "less_than_equal": ("le", "<="), "greater_than": ("gt", ">"), "less_than": ("lt", "<")}
    if kind in bounds:
        name, word = bounds[kind]
        return f"must be {word} {ctx.get(name)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind in ("string_type",):
        return "must be a string"
    if kind in ("list_type",):
        return "must be a list"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be an object (a YAML mapping)"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    if kind == "too_short":
        return "must not be empty"
    message = str(error.get("msg", kind))
    return message.removeprefix("Value error, ")


def _lookup(raw: Any, loc: tuple[int | str, ...]) -> Any:
    value = raw
    for part in loc:
        if isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        elif isinstance(value, dict):
            camel = to_camel(part) if isinstance(part, str) else part
            if camel in value:
                value = value[camel]
            elif part in value:
                value = value[part]
            else:
                return None
        else:
            return None
    return value


def validate(raw: Mapping[str, Any]) -> StackConfig:
    """Validate raw stack config (keys without the project prefix); raise :class:`ConfigError` with
    every problem at once: each field's, then each rule between keys whose fields are valid."""
    config: StackConfig | None = None
    problems: list[str] = []
    refused: set[str] = set()
    try:
        config = StackConfig.model_validate(dict(raw))
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(error["loc"])
            key = _key_path(loc)
            refused.add(key)
            value = _lookup(raw, loc)
            shown = "(not set)" if error["type"] == "missing" else _show(key, value)
            problems.append(f"{PROJECT}:{key} = {shown}: {_rule(error)}")
    problems += [f"{PROJECT}:{key} = {_show(key, value)}: {rule}" for key, value, rule in _cross_checks(raw) if key not in refused]
    if problems or config is None:
        raise ConfigError(problems)
    return config


def warnings(config: StackConfig) -> list[str]:
    """Deployable but risky choices, printed by the program as warnings."""
    out = []
    if config.ceph.client.caps == "runbook":
        out.append(
            f"{PROJECT}:ceph.client.caps = runbook: client.{config.ceph.client.name} gets mon 'allow r', which lacks the "
            "blocklist permission a node needs to break a dead node's exclusive lock: an HA failover can hang. "
            "Use profile-rbd (the default) unless you know why not."
        )
    if not config.proxmox.verify_tls:
        out.append(f"{PROJECT}:proxmox.verifyTls = false: the API's certificate is not checked; set proxmox.caFile instead")
    non_ha = [vm.name for vm in config.vms if not vm.ha]
    if non_ha:
        out.append(f"{PROJECT}:vms: {', '.join(non_ha)} not HA-managed (ha: false): they will not fail over")
    return out


def _parse(value: str) -> Any:
    """Structured stack config arrives JSON-encoded; plain strings stay strings."""
    import json

    if value[:1] in "[{" or value in ("true", "false"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if value.isdigit():
        return int(value)
    return value


def load_from_pulumi() -> StackConfig:
    """Read this project's keys from the running stack's config and validate them."""
    from pulumi.runtime.config import get_config_env, get_config_secret_keys_env

    prefix = f"{PROJECT}:"
    raw = {key[len(prefix) :]: _parse(value) for key, value in get_config_env().items() if key.startswith(prefix)}
    secret_keys = {key[len(prefix) :] for key in get_config_secret_keys_env() or [] if key.startswith(prefix)}
    plaintext = [
        f"{PROJECT}:{k} = <secret>: is stored in plain text; set it with `pulumi config set --secret {k}`"
        for k in sorted(SECRET_KEYS)
        if k in raw and k not in secret_keys
    ]
    try:
        config = validate(raw)
    except ConfigError as error:
        raise ConfigError([*error.problems, *plaintext]) from None
    if plaintext:
        raise ConfigError(plaintext)
    return config
