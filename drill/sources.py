"""Where the drill finds the cluster and its HA VMs: a stack's outputs and config, a lab file, or
the command line (which wins over the other two).

- a stack: ``pulumi stack output --json -s STACK`` (``vms``, ``storageId``), its config file
  ``Pulumi.STACK.yaml`` (``proxmox.endpoint/caFile/nodes``, ``ssh.*``) and, unless a token is
  given, the secret ``proxmoxApiToken`` (``pulumi config get``);
- a lab file (``.lab/lab.json``): the lab's API, token, CA, node addresses, SSH and control channel;
- flags: ``--endpoint``, ``--token-file``/``--token-env``, ``--vm``, ``--node-api``, ``--node-ssh`` ...
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clients.pve import cluster_ha
from clients.stack import SourceError, pulumi_cli, read_json, read_stack_config, token


@dataclass(frozen=True)
class Node:
    name: str
    api: str | None = None  # https://HOST:8006 of this node's own API
    ssh_host: str | None = None
    ssh_port: int = 22


@dataclass(frozen=True)
class Vm:
    vmid: int
    name: str = ""

    @property
    def sid(self) -> str:
        return cluster_ha.sid(self.vmid)


@dataclass
class Cluster:
    """How to reach the cluster: the API (token, CA), each node's API and SSH, the lab's control channel."""

    endpoint: str
    token: str = field(repr=False)
    ca_file: str | None = None
    verify_tls: bool = True
    nodes: dict[str, Node] = field(default_factory=dict)
    ssh_user: str = "root"
    ssh_key_file: str | None = None
    known_hosts_file: str | None = None
    control: str | None = None  # the lab's fault control channel (only for --method lab)
    vms: list[Vm] = field(default_factory=list)
    stack: str | None = None
    project_dir: Path = field(default_factory=Path.cwd)

    def node_api(self, name: str) -> str | None:
        return self.nodes[name].api if name in self.nodes else None


def relative_to(base: Path, value: str | None) -> str | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise SourceError(f"{flag} {value}: expected NAME=VALUE, e.g. {flag} pve-node2=https://10.10.10.12:8006")
        out[name] = rest
    return out


def _host_port(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or "]" in port:  # no port, or a bare IPv6 address
        return value.strip("[]"), 22
    if not port.isdigit():
        raise SourceError(f"{flag} {value}: the port must be a number (HOST or HOST:PORT)")
    return host.strip("[]"), int(port)


def _vms_from_outputs(outputs: dict[str, Any]) -> list[Vm]:
    vms = outputs.get("vms")
    if not isinstance(vms, list):
        raise SourceError("stack outputs: no `vms` list (is this a pve-ceph-ha stack?)")
    return [Vm(int(vm["id"]), str(vm.get("name") or "")) for vm in vms if isinstance(vm, dict) and vm.get("haSid")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that say where the cluster is, shared by the drill and `python -m maintain`."""
    src = p.add_argument_group("the cluster (a stack, a lab file, or flags; flags win)")
    src.add_argument("--stack", help="Pulumi stack: its outputs, its Pulumi.<stack>.yaml and its proxmoxApiToken secret")
    src.add_argument("--project-dir", help="the Pulumi project's folder (default: the current one)")
    src.add_argument("--stack-outputs", metavar="FILE", help="the JSON of `pulumi stack output --json -s STACK`")
    src.add_argument("--stack-config", metavar="FILE", help="a Pulumi.<stack>.yaml: API endpoint, CA, node addresses, SSH files")
    src.add_argument("--lab-file", metavar="FILE", help="the lab's .lab/lab.json")
    src.add_argument("--endpoint", help="a PVE API URL, https://HOST:8006")
    src.add_argument("--token-file", metavar="FILE", help="file holding the API token USER@REALM!NAME=UUID")
    src.add_argument("--token-env", metavar="VAR", help="environment variable holding the API token")
    src.add_argument("--ca-file", metavar="FILE", help="CA bundle that signed the API certificates")
    src.add_argument("--insecure", action="store_true", help="do not check the API's TLS certificate")
    src.add_argument("--node-api", action="append", default=[], metavar="NAME=URL", help="a node's own API (repeatable)")
    src.add_argument("--node-ssh", action="append", default=[], metavar="NAME=HOST[:PORT]", help="a node's SSH address (repeatable)")
    src.add_argument("--ssh-user", help="SSH user on the nodes (default root)")
    src.add_argument("--ssh-key", metavar="FILE", help="SSH private key (default ssh.privateKeyFile or ~/.ssh/id_ed25519)")
    src.add_argument("--known-hosts", metavar="FILE", help="known_hosts with every node's host key (default ssh.knownHostsFile or ~/.ssh/known_hosts)")
    src.add_argument("--control", metavar="URL", help="the lab's fault control channel (default: from --lab-file)")


def resolve(args: argparse.Namespace, need_vms: bool = True) -> Cluster:
    """Merge the sources the operator gave into one :class:`Cluster`. NEED_VMS: the drill's VMs must
    be named (by --vm or the stack's outputs); `maintain` works on every HA service of the cluster."""
    project_dir = Path(args.project_dir or ".").resolve()
    outputs: dict[str, Any] = {}
    config: dict[str, Any] = {}
    config_dir = project_dir
    if args.stack:
        outputs = json.loads(pulumi_cli(["stack", "output", "--json", "-s", args.stack], project_dir, f"stack {args.stack}") or "{}")
        stack_file = project_dir / f"Pulumi.{args.stack}.yaml"
        if stack_file.is_file() and not args.stack_config:
            config = read_stack_config(stack_file)
    if args.stack_outputs:
        outputs = read_json(args.stack_outputs, "--stack-outputs")
    if args.stack_config:
        config = read_stack_config(Path(args.stack_config))
        config_dir = Path(args.stack_config).resolve().parent
    lab: dict[str, Any] = read_json(args.lab_file, "--lab-file") if args.lab_file else {}
    lab_pve, lab_ssh = lab.get("pve") or {}, lab.get("ssh") or {}
    proxmox, ssh = config.get("proxmox") or {}, config.get("ssh") or {}

    endpoint = args.endpoint or lab_pve.get("endpoint") or proxmox.get("endpoint")
    if not endpoint:
        raise SourceError("no PVE API endpoint: give --endpoint https://HOST:8006, --stack STACK, --stack-config FILE or --lab-file FILE")
    if urlsplit(endpoint).scheme != "https":
        raise SourceError(f"--endpoint {endpoint}: must be the API's https URL, e.g. https://10.10.10.11:8006")
    port = urlsplit(endpoint).port or 8006

    nodes: dict[str, dict[str, Any]] = {}
    for spec in proxmox.get("nodes") or []:
        nodes[spec["name"]] = {"api": f"https://{spec['address']}:{port}", "ssh_host": spec["address"], "ssh_port": int(spec.get("sshPort", 22))}
    for name, spec in (lab_pve.get("nodes") or {}).items():
        nodes.setdefault(name, {}).update(api=spec.get("api"))
    for name, host in (lab_ssh.get("hosts") or {}).items():
        if name in nodes:
            nodes[name].update(ssh_host=host, ssh_port=int(lab_ssh.get("port", 22)))
    for name, url in _pairs(args.node_api, "--node-api").items():
        nodes.setdefault(name, {})["api"] = url
    for name, value in _pairs(args.node_ssh, "--node-ssh").items():
        host, ssh_port = _host_port(value, "--node-ssh")
        nodes.setdefault(name, {}).update(ssh_host=host, ssh_port=ssh_port)

    vms: list[Vm] = []
    if getattr(args, "vm", None):
        named = {vm.vmid: vm.name for vm in (_vms_from_outputs(outputs) if outputs else [])}
        vms = [Vm(vmid, named.get(vmid, "")) for vmid in args.vm]
    elif outputs:
        vms = _vms_from_outputs(outputs)
    elif need_vms:
        raise SourceError("which VMs? give --vm ID (repeatable), or --stack / --stack-outputs with HA VMs in `vms`")
    if need_vms and not vms:
        raise SourceError("the stack outputs list no HA VM (every `vms` entry has haSid null): nothing to drill")

    ca_file = args.ca_file or lab_pve.get("ca_file") or relative_to(config_dir, proxmox.get("caFile"))
    return Cluster(
        endpoint=endpoint,
        token=token(args, lab_pve, args.stack, project_dir),
        ca_file=ca_file,
        verify_tls=not args.insecure and proxmox.get("verifyTls", True) is not False,
        nodes={name: Node(name, **spec) for name, spec in nodes.items()},
        ssh_user=args.ssh_user or lab_ssh.get("user") or proxmox.get("sshUser") or "root",
        ssh_key_file=args.ssh_key or lab_ssh.get("private_key_path") or relative_to(config_dir, ssh.get("privateKeyFile") or "~/.ssh/id_ed25519"),
        known_hosts_file=args.known_hosts or lab_ssh.get("known_hosts") or relative_to(config_dir, ssh.get("knownHostsFile") or "~/.ssh/known_hosts"),
        control=args.control or lab_pve.get("control"),
        vms=vms,
        stack=args.stack,
        project_dir=project_dir,
    )
