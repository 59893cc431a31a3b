"""The config model's building blocks: the name patterns, the strict number and boolean types,
the error type and the base model (components/config.py and components/config_vm.py build on them)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)
from pydantic.alias_generators import to_camel

PROJECT = "pve-ceph-ha"

# Names that reach a shell or an API path. Ceph pool names may hold more than this, PVE storage
# ids less; these are the intersection an operator can rely on everywhere.
POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
STORAGE_ID = re.compile(r"^[a-z][a-z0-9_-]{1,62}$")  # PVE's pve-storage-id
NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # a host name label
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
VM_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")  # PVE's dns-name
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
ISO_VOLUME = re.compile(r"^[a-z][a-z0-9_-]{1,62}:iso/[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.iso$")
BRIDGE = re.compile(r"^vmbr[0-9]{1,4}$|^[a-z][a-z0-9]{0,14}$")
CPU_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
HA_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,62}$")
API_TOKEN = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+![A-Za-z][A-Za-z0-9._-]*=[A-Za-z0-9-]{8,128}$")
ENDPOINT = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$")
VM_ID_MIN, VM_ID_MAX = 100, 999_999_999  # PVE's pve-vmid range

SECRET_KEYS = frozenset({"proxmoxApiToken", "sshPrivateKey"})


class ConfigError(Exception):
    """A config that cannot be deployed. ``str()`` is the operator's message, one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(f"config error: {p}" for p in problems))


def _pattern(regex: re.Pattern[str], rule: str, fix: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"{rule}; {fix}")
        return value

    return AfterValidator(check)


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if HOSTNAME.fullmatch(value) and not re.fullmatch(r"[0-9.]+", value):
        return value
    raise ValueError("must be an IP address or a host name (letters, digits, '-', '.'); e.g. 10.10.10.101")


def _whole_number(value: Any) -> Any:
    """An integer key takes a YAML integer, or digits alone as a string (what `pulumi config set`
    stores): ``+101``, ``1_000``, ``101.0``, `` 101`` and ``true`` are refused, as typos are,
    where Python's int() would take them."""
    if isinstance(value, bool | float) or (isinstance(value, str) and not re.fullmatch(r"[0-9]+", value)):
        raise ValueError("must be a whole number written as digits alone, e.g. 101")
    return int(value) if isinstance(value, str) else value


def _true_or_false(value: Any) -> Any:
    """A boolean key takes true or false (YAML's, or the words as `pulumi config set` stores them):
    ``yes``, ``on``, ``1`` and ``True`` are refused, where pydantic would read them as true."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("must be true or false")


Int = Annotated[int, BeforeValidator(_whole_number)]
Bool = Annotated[bool, BeforeValidator(_true_or_false)]

PoolName = Annotated[str, _pattern(POOL_NAME, "must be 1-63 of a-z 0-9 _ . - starting with a letter or digit", "e.g. rbd-pool")]
ClientName = Annotated[str, _pattern(CLIENT_NAME, "must be 1-63 of a-z 0-9 _ - without the 'client.' prefix", "e.g. proxmox")]
StorageId = Annotated[str, _pattern(STORAGE_ID, "must be a PVE storage id: 2-63 of a-z 0-9 _ - starting with a letter", "e.g. ceph-rbd")]
NodeName = Annotated[str, _pattern(NODE_NAME, "must be a PVE node name (a host name label: a-z 0-9 -)", "e.g. pve-node1")]
Host = Annotated[str, AfterValidator(_host)]
UserName = Annotated[str, _pattern(USER_NAME, "must be a POSIX user name", "e.g. root")]
HaName = Annotated[str, _pattern(HA_NAME, "must be 2-63 of a-z 0-9 _ - starting with a letter", "e.g. ha-prefer-node1")]
Port = Annotated[Int, Field(ge=1, le=65535)]


class Model(BaseModel):
    """Base of every config section: camelCase keys, unknown keys refused, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _entries(raw: Mapping[str, Any], *path: str) -> list[tuple[int, Mapping[str, Any]]]:
    """The mappings of the list at PATH in raw config, with their positions (none when it is not a list)."""
    value: Any = raw
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return [(i, item) for i, item in enumerate(value) if isinstance(item, Mapping)] if isinstance(value, list) else []
