"""Every string that reaches a shell is either refused by the config model or provably quoted."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from clients import ceph_cli
from clients.ceph_cli import Caps
from clients.ssh import render
from components import ceph_common, ceph_health
from components import config as cfg
from tests.corpus import API_PAYLOADS, PAYLOADS
from tests.corpus import set_path as _set
from tests.unit.helpers import valid_raw

# Every config string that ends up in a shell command or an API path.
SHELL_FIELDS = [
    "ceph.pool.name",
    "ceph.client.name",
    "ceph.admin.host",
    "ceph.admin.user",
    "ceph.monitors[0]",
    "proxmox.sshUser",
    "proxmox.nodes[0].name",
    "proxmox.nodes[0].address",
    "storage.id",
    "vms[0].name",
    "vms[0].node",
    "vms[0].iso",
    "vms[0].bridge",
    "vms[0].cpuType",
    "ha.affinities[0].name",
]


# Every string of a VM that reaches the PVE API (the engine runs both corpora over every VM key:
# tests/integration/test_bad_config_engine.py).
VM_STRING_FIELDS = ["vms[0].name", "vms[0].node", "vms[0].iso", "vms[0].bridge", "vms[0].cpuType", "vms[0].affinity", "vms[0].pvePool"]
# Free text: a body value bpg form-encodes (the VM's notes), never part of a path or a shell word;
# any printable text is the operator's (control characters are refused).
FREE_TEXT = ["vms[0].description"]


def test_there_are_at_least_twenty_payloads() -> None:
    assert len(PAYLOADS) >= 20
    assert len(API_PAYLOADS) >= 12


def test_the_vm_string_fields_are_every_string_key_of_the_vm_model() -> None:
    """A key the model types as a string refuses a number with 'must be a string'."""
    strings = set()
    for field in cfg.VmSpec.model_fields.values():
        path = f"vms[0].{field.alias}"
        try:
            cfg.validate(_set(valid_raw(), path, 5))
        except cfg.ConfigError as error:
            if f"pve-ceph-ha:{path} = 5: must be a string" in str(error):
                strings.add(path)
    assert strings == set(VM_STRING_FIELDS) | set(FREE_TEXT)


def assert_refused_naming(field: str, payload: str) -> None:
    raw: dict[str, Any] = _set(valid_raw(), field, payload)
    with pytest.raises(cfg.ConfigError) as info:
        cfg.validate(raw)
    assert f"pve-ceph-ha:{field} = " in str(info.value)


@pytest.mark.parametrize("field", SHELL_FIELDS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_payload_in_a_shell_field_is_rejected(field: str, payload: str) -> None:
    assert_refused_naming(field, payload)


@pytest.mark.parametrize("field", VM_STRING_FIELDS)
@pytest.mark.parametrize("payload", API_PAYLOADS, ids=range(len(API_PAYLOADS)))
def test_api_payload_in_a_vm_field_is_rejected(field: str, payload: str) -> None:
    assert_refused_naming(field, payload)


# NUL cannot travel in an SSH exec request at all (the config refuses it: the test above).
SHELL_PAYLOADS = [p for p in PAYLOADS if "\x00" not in p]


@pytest.mark.parametrize("payload", SHELL_PAYLOADS, ids=range(len(SHELL_PAYLOADS)))
def test_every_remote_command_quotes_what_it_is_given(payload: str) -> None:
    """Even a value the model would refuse comes back as one argv word after the remote shell splits it."""
    commands = [
        ceph_cli.pool_create(payload, 32),
        ceph_cli.pool_set(payload, "size", 3),
        ceph_cli.rbd_pool_init(payload),
        ceph_cli.rbd_ls(payload),
        ceph_cli.pool_delete(payload),
        ceph_cli.auth_get(payload),
        ceph_cli.auth_get_or_create(payload, Caps.for_profile("profile-rbd", payload)),
        ceph_cli.auth_caps(payload, Caps.for_profile("runbook", payload)),
        ceph_cli.auth_del(payload),
        ceph_cli.config_get(payload, payload),
        ceph_cli.config_set(payload, payload, payload),
        ceph_cli.config_rm(payload, payload),
        ceph_common.install_argv(payload),
        ceph_common.query_argv(payload),
        ceph_health.gate_argv(payload, 32, 3),
    ]
    for argv in commands:
        assert shlex.split(render(argv)) == argv
