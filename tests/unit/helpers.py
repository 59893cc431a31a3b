"""Shared pieces of the unit tests: a valid config, throwaway credentials, a recording monitor."""

from __future__ import annotations

import copy
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks

from components import config as cfg
from components.credentials import Credentials, parse_known_hosts

SECRET_SIG = "4dabf18193072939515e22adb298388d"
TOKEN = "root@pam!pulumi=0f1e2d3c-4b5a-6978-8a9b-acbdcedfe0f1"
CEPHX_KEY = "AQDxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx=="


def valid_raw() -> dict[str, Any]:
    """A lab-shaped config: three nodes, one HA VM, PVE 9 rules."""
    return copy.deepcopy(
        {
            "ceph": {
                "admin": {"host": "127.10.10.101", "port": 2222, "user": "root"},
                "monitors": ["127.10.10.101", "127.10.10.102", "127.10.10.103"],
                "pool": {"name": "rbd-pool", "pgNum": 32, "size": 3, "autoscaleMode": "off"},
                "client": {"name": "proxmox", "caps": "profile-rbd"},
                "scrubWindow": {"beginHour": 22, "endHour": 6},
            },
            "ssh": {"privateKeyFile": "/nonexistent/id", "knownHostsFile": "/nonexistent/known_hosts"},
            "proxmox": {
                "endpoint": "https://127.10.20.11:8006",
                "verifyTls": True,
                "nodes": [
                    {"name": "pve-node1", "address": "127.10.20.11", "sshPort": 2222},
                    {"name": "pve-node2", "address": "127.10.20.12", "sshPort": 2222},
                    {"name": "pve-node3", "address": "127.10.20.13", "sshPort": 2222},
                ],
            },
            "storage": {"id": "ceph-rbd", "content": ["images"]},
            "vms": [{"id": 101, "name": "vm101", "node": "pve-node1", "iso": "local:iso/debian-12.iso"}],
            "ha": {"mode": "rules", "maxRestart": 1, "maxRelocate": 1, "affinities": [{"name": "prefer-node1", "nodes": {"pve-node1": 2, "pve-node2": 1}}]},
            "proxmoxApiToken": TOKEN,
        }
    )


def make_credentials(hosts: list[tuple[str, int]]) -> Credentials:
    """A key pair made for this test run and a known_hosts text naming every host with it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    text = "\n".join(f"[{h}]:{p} {public}" if p != 22 else f"{h} {public}" for h, p in hosts)
    return Credentials(private_key=pem, known_hosts_text=text, known_hosts=parse_known_hosts(text))


def lab_credentials(config: cfg.StackConfig) -> Credentials:
    hosts = [(config.ceph.admin.host, config.ceph.admin.port)] + [(n.address, n.ssh_port) for n in config.proxmox.nodes]
    return make_credentials(hosts)


class Registration:
    def __init__(self, request: Any):
        self.type: str = request.type
        self.name: str = request.name
        self.parent: str = request.parent
        self.dependencies: list[str] = list(request.dependencies)
        self.property_dependencies: dict[str, list[str]] = {k: list(v.urns) for k, v in request.propertyDependencies.items()}
        self.raw: dict[str, Any] = json_format.MessageToDict(request.object)
        self.ignore_changes: list[str] = list(request.ignoreChanges)
        self.additional_secret_outputs: list[str] = list(request.additionalSecretOutputs)
        self.provider: str = request.provider

    def secret_paths(self) -> set[str]:
        """Top-level input names whose value (or part of it) is a secret."""
        found: set[str] = set()

        def walk(value: Any) -> bool:
            if isinstance(value, dict):
                if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
                    return True
                return any(walk(v) for v in value.values())
            if isinstance(value, list):
                return any(walk(v) for v in value)
            return False

        for key, value in self.raw.items():
            if walk(value):
                found.add(key)
        return found

    def plain(self, key: str) -> Any:
        """An input's value with secret wrappers removed."""

        def unwrap(value: Any) -> Any:
            if isinstance(value, dict):
                if SECRET_SIG in value:
                    return unwrap(value.get("value"))
                return {k: unwrap(v) for k, v in value.items()}
            if isinstance(value, list):
                return [unwrap(v) for v in value]
            return value

        return unwrap(self.raw.get(key))


class RecordingMonitor(mocks.MockMonitor):
    """Sees every RegisterResource request: parent, dependencies, property dependencies, secrets."""

    def __init__(self, mocks_: mocks.Mocks):
        super().__init__(mocks_)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(Registration(request))
        return super().RegisterResource(request)

    def by_name(self, name: str) -> Registration:
        (match,) = [r for r in self.registrations if r.name == name]
        return match

    def urn(self, name: str) -> str:
        reg = self.by_name(name)
        return next(urn for urn in self.resources if urn.endswith(f"::{reg.name}") and reg.type.split(":")[-1] in urn)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]


class WorldMocks(mocks.Mocks):
    """What the providers would answer: ids, and the outputs the program reads."""

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        outs = dict(args.inputs)
        if args.typ.startswith("pulumi-python:dynamic") and "caps" in outs:
            outs["key"] = CEPHX_KEY
        if args.typ.endswith("pveceph:HealthGate"):
            outs["report"] = "health: HEALTH_OK"
        if args.typ.endswith("pveceph:CephCommonPackage"):
            outs["version"] = "16.2.15+ds-0+deb12u2"
        if args.typ.endswith("pveceph:VmImages"):
            outs["images"] = {str(int(vm)): [f"{outs['pool']}/vm-{int(vm)}-disk-0"] for vm in outs["vmIds"]}
        return f"{args.name}-id", outs

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def deploy(raw: dict[str, Any], stack: str = "unit") -> tuple[RecordingMonitor, dict[str, Any]]:
    """Declare the whole program under mocks; return the monitor and the resolved outputs."""
    from components.stack import PveCephHa

    monitor = RecordingMonitor(WorldMocks())
    pulumi.runtime.set_mocks(WorldMocks(), project="pve-ceph-ha", stack=stack, preview=False, monitor=monitor)
    config = cfg.validate(raw)
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def run() -> Any:
        deployment = PveCephHa(stack, config, lab_credentials(config))
        keys = list(deployment.outputs)
        return pulumi.Output.all(*[deployment.outputs[k] for k in keys]).apply(lambda values: resolved.update(zip(keys, values, strict=True)))

    run()
    return monitor, resolved
