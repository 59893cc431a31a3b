"""The lab for the drill's tests: brought up once (left as found), a test RBD storage on its real
Ceph, HA VMs 601+ on it, and every node restored after each test. The storage, its pool and the
VMs live as long as the module that uses them: a pool left for the rest of the session takes
placement groups from the tests after it (3 OSDs hold 750 PG replicas in all)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from lab.testing.seed import LabAccess, drop_storage, ensure_ha_vm, ensure_storage, remove_vm


@pytest.fixture(scope="module")
def test_storage(lab_access: LabAccess) -> Iterator[str]:
    tag = uuid.uuid4().hex[:6]
    storage, pool, client = f"drilltest-{tag}", f"drilltest-{tag}", f"drilltest-{tag}"
    ensure_storage(lab_access, storage, pool, client)
    yield storage
    drop_storage(lab_access, storage, pool, client)


@pytest.fixture(scope="module")
def ha_vm(lab_access: LabAccess, test_storage: str) -> Iterator[Callable[..., str]]:
    """ha_vm(601) -> "vm:601": a VM on the test storage, HA resource in the given state (made once)."""
    made: list[int] = []

    def make(vmid: int, state: str = "started") -> str:
        if vmid not in made:
            made.append(vmid)
        return ensure_ha_vm(lab_access, vmid, test_storage, state=state, name=f"drilltest{vmid}")

    yield make
    lab_access.restore_all()
    for vmid in made:
        remove_vm(lab_access, vmid)
