"""The VMs' part of the config model: each VM (``vms``), its disks, NICs, clone and cloud-init,
and the templates the stack makes itself (``templates``).

A VM is made one of two ways: from an ISO (the runbook's 3-1), or as a clone of a template (a
cloud image with cloud-init, as operators who run more than a few VMs do). The template is either
the operator's golden image, named by its VM id, or one of the stack's ``templates``, made from a
cloud image file on a node's storage (PVE 8's ``import-from``) and then marked a template.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from components.config_base import (
    BRIDGE,
    CPU_TYPE,
    ISO_VOLUME,
    VM_ID_MAX,
    VM_ID_MIN,
    VM_NAME,
    Bool,
    HaName,
    Int,
    Model,
    NodeName,
    UserName,
    _pattern,
)

OWNER_TAG_PREFIX = "pulumi-stack."  # components/owners.py TAG_PREFIX: the ownership marker
NO_HA_TAG = "no-ha"  # components/ha_vm.py: marks a VM deliberately left out of HA
IMPORT_VOLUME = re.compile(r"^[a-z][a-z0-9_-]{1,62}:import/[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.(raw|qcow2|vmdk)$")
TAG = re.compile(r"^[a-z0-9_][a-z0-9_+.-]{0,127}$")  # PVE's pve-tag (lower case: PVE keeps tags as given)
PVE_POOL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")  # PVE's pve-poolid
# The key types OpenSSH takes in authorized_keys (sshd(8) AUTHORIZED_KEYS FILE FORMAT).
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
MAX_DISKS = 31  # PVE's scsi0..scsi30
MAX_NICS = 32  # PVE's net0..net31
Bridge = Annotated[str, _pattern(BRIDGE, "must be a Linux bridge name", "e.g. vmbr0")]
VmId = Annotated[Int, Field(ge=VM_ID_MIN, le=VM_ID_MAX)]
VmName = Annotated[str, _pattern(VM_NAME, "must be a DNS name (a-z 0-9 - .)", "e.g. vm101")]


def _ssh_public_key(value: str) -> str:
    """One OpenSSH public key line: a known type, its base64 blob (which names the same type), an
    optional comment. A private key, a fingerprint or a truncated paste is refused; the value is
    not echoed back beyond its type, as a key is the operator's."""
    parts = value.strip().split(None, 2)
    rule = "must be an OpenSSH public key line '<type> <base64> [comment]' (the .pub file); e.g. ssh-ed25519 AAAAC3... ops@host"
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValueError(f"{rule}; the key type must be one of {', '.join(SSH_KEY_TYPES)}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        named = blob[4 : 4 + length].decode()
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise ValueError(f"{rule}; its base64 part does not decode") from None
    if named != parts[0]:
        raise ValueError(f"{rule}; its base64 part is not a {parts[0]} key")
    return value.strip()


def _ipv4_with_prefix(value: str) -> str:
    if value == "dhcp":
        return value
    if "/" not in value:
        raise ValueError("a static address needs its prefix length, e.g. 192.0.2.10/24; or dhcp")
    try:
        ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError("must be dhcp or an IPv4 address with its prefix length, e.g. 192.0.2.10/24") from None
    return value


def _ipv4(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError("must be an IPv4 address, e.g. 192.0.2.1") from None
    return value


def _tag(value: str) -> str:
    if not TAG.fullmatch(value):
        raise ValueError("must be a PVE tag: a-z 0-9 _ + . - (lower case), e.g. web")
    if value.startswith(OWNER_TAG_PREFIX) or value == NO_HA_TAG:
        raise ValueError(f"is a marker the program sets itself ({OWNER_TAG_PREFIX}<project>.<stack>, {NO_HA_TAG}); choose another tag")
    return value


SshKey = Annotated[str, AfterValidator(_ssh_public_key)]
Ipv4 = Annotated[str, AfterValidator(_ipv4)]
Tag = Annotated[str, AfterValidator(_tag)]


class DiskSpec(Model):
    """One disk on the RBD storage: scsi0, scsi1, ... in the order listed (runbook 3-1's cache and discard)."""

    size_gb: Int = Field(ge=1, le=131_072, description="size in GiB; it can only grow (PVE cannot shrink a disk)")
    cache: Literal["writeback", "none", "writethrough", "directsync", "unsafe"] = Field(default="writeback", description="QEMU cache mode")
    discard: Literal["on", "ignore"] = Field(default="on", description="pass TRIM to the RBD image (thin provisioning)")


class NicSpec(Model):
    """One VirtIO NIC: net0, net1, ... in the order listed. Its MAC address is derived from the VM id
    and the NIC's position unless given, so it stays the same across updates (components/ha_vm.py).
    A VM moved from `bridge` to `nics` gets the derived MAC on net0: give nics[0].mac its current
    one (`qm config <id>`, net0) to keep it."""

    bridge: Bridge = Field(default="vmbr0", description="Linux bridge")
    vlan: Int | None = Field(default=None, ge=1, le=4094, description="802.1Q VLAN tag (1-4094); none: untagged")
    mac: Annotated[str, _pattern(re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$"), "must be a MAC address in upper case", "e.g. BC:24:11:00:00:01")] | None = (
        Field(default=None, description="MAC address; default: BC:24:11 (PVE's prefix) and a hash of the VM id and position")
    )


class CloudInitSpec(Model):
    """PVE's cloud-init drive (``vm-<id>-cloudinit`` on the RBD storage, NoCloud): the user, keys and network of a clone."""

    user: UserName = Field(default="debian", description="the user cloud-init creates (ciuser)")
    ssh_keys: list[SshKey] = Field(default=[], description="OpenSSH public keys for the user (sshkeys)")
    ip: Annotated[str, AfterValidator(_ipv4_with_prefix)] = Field(default="dhcp", description="net0's IPv4: dhcp, or address/prefix (ipconfig0)")
    gateway: Ipv4 | None = Field(default=None, description="net0's IPv4 gateway, with a static ip")
    dns: list[Ipv4] = Field(default=[], description="DNS servers (nameserver); none: the host's")
    search_domain: Annotated[str, _pattern(re.compile(r"^[a-z0-9.-]{1,253}$"), "must be a DNS domain", "e.g. example.org")] | None = Field(
        default=None, description="DNS search domain (searchdomain)"
    )

    @model_validator(mode="after")
    def _gateway_in_network(self) -> CloudInitSpec:
        if self.gateway and self.ip == "dhcp":
            raise ValueError("gateway is set with ip dhcp: DHCP gives the gateway; set a static ip or drop the gateway")
        if self.gateway and ipaddress.IPv4Address(self.gateway) not in ipaddress.IPv4Interface(self.ip).network:
            raise ValueError(f"gateway {self.gateway} is not in {ipaddress.IPv4Interface(self.ip).network}; fix the ip's prefix or the gateway")
        return self


class CloneSpec(Model):
    """The template a VM is cloned from: an existing template VM, or one of the stack's ``templates``."""

    template: VmId = Field(description="the template's VM id (it must be a template, or one of `templates`)")
    node: NodeName | None = Field(default=None, description="the template's node; default: the VM's node (a stack template: its own)")
    full: Bool = Field(default=False, description="a full copy (RBD copy); false: a linked clone (an RBD clone of the template's base image)")


class TemplateSpec(Model):
    """A template the stack makes: a VM whose disk is a cloud image imported onto the RBD storage, then marked a template."""

    id: VmId = Field(description="the template's VM id")
    name: VmName = Field(description="the template's name")
    node: NodeName = Field(description="the node whose storage holds the image")
    image: Annotated[
        str, _pattern(IMPORT_VOLUME, "must be an import volume '<storage>:import/<file>.(raw|qcow2|vmdk)'", "e.g. local:import/debian-12.qcow2")
    ] = Field(description="the cloud image (PVE 8's import-from), on the node's storage with the import content type")
    disk_gb: Int = Field(default=8, ge=1, le=131_072, description="scsi0's size in GiB; at least the image's virtual size")
    bridge: Bridge = Field(default="vmbr0", description="net0's bridge (the clones' NICs are their own)")


class VmSpec(Model):
    """Runbook 3-1: a VM with its disks on the RBD storage, from an ISO or a clone of a template."""

    id: VmId = Field(description="VM id (100-999999999)")
    name: VmName = Field(description="VM name (a DNS name)")
    node: NodeName = Field(description="initial node; after a failover HA decides where it runs")
    cores: Int = Field(default=2, ge=1, le=512, description="CPU cores; a change to a running VM restarts it through HA")
    memory_mb: Int = Field(default=2048, ge=16, le=4_194_304, description="memory in MiB; a change to a running VM restarts it through HA")
    disk_gb: Int = Field(default=32, ge=1, le=131_072, description="scsi0 size in GiB, on the RBD storage (when `disks` is not set)")
    disks: list[DiskSpec] | None = Field(default=None, min_length=1, max_length=MAX_DISKS, description="scsi0..N on the RBD storage; replaces diskGb")
    iso: Annotated[str, _pattern(ISO_VOLUME, "must be an ISO volume id '<storage>:iso/<file>.iso'", "e.g. local:iso/debian-12.iso")] | None = None
    bridge: Bridge = Field(default="vmbr0", description="net0's bridge (when `nics` is not set)")
    nics: list[NicSpec] | None = Field(default=None, min_length=1, max_length=MAX_NICS, description="net0..N; replaces bridge")
    clone: CloneSpec | None = Field(default=None, description="clone this template instead of an empty disk")
    cloud_init: CloudInitSpec | None = Field(default=None, description="a cloud-init drive on the RBD storage")
    agent: Bool = Field(default=False, description="the QEMU guest agent flag (the guest must run qemu-guest-agent)")
    description: Annotated[str, _pattern(re.compile(r"^[^\x00-\x08\x0b-\x1f\x7f]{0,8192}$"), "must be printable text", "")] | None = Field(
        default=None, description="the VM's notes"
    )
    tags: list[Tag] = Field(default=[], description="PVE tags (the owner and no-ha markers are the program's)")
    pve_pool: Annotated[str, _pattern(PVE_POOL, "must be a PVE pool id", "e.g. prod")] | None = Field(
        default=None, description="the PVE resource pool (not Ceph's); it must exist"
    )
    start_order: Int | None = Field(default=None, ge=0, le=10_000, description="boot order at node start (startup order=)")
    cpu_type: Annotated[str, _pattern(CPU_TYPE, "must be a QEMU CPU model name", "e.g. x86-64-v2-AES")] = "x86-64-v2-AES"
    ha: Bool = Field(default=True, description="register as an HA resource")
    affinity: HaName | None = Field(default=None, description="name of an ha.affinities entry")
    allow_replace: Bool = Field(
        default=False, description="allow a change that replaces the VM (a new template, full/linked): its disks are destroyed and made again"
    )

    def disk_list(self) -> list[DiskSpec]:
        return list(self.disks) if self.disks else [DiskSpec(size_gb=self.disk_gb)]

    def nic_list(self) -> list[NicSpec]:
        return list(self.nics) if self.nics else [NicSpec(bridge=self.bridge)]
