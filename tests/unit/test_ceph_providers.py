"""CephRbdPool's and CephClient's providers, called directly, with a recording executor."""

from __future__ import annotations

from typing import Any

import pytest

from clients.ceph_cli import Caps
from clients.ssh import Result
from components.ceph_client import ClientInputs, ClientProvider
from components.ceph_pool import PoolInputs, PoolProvider
from components.errors import OperatorError, PartiallyCreated
from tests.unit.fake_ceph import FakeCeph

CONNECTION = {"host": "127.10.10.101", "port": 2222, "user": "root", "privateKey": "unused", "knownHosts": ""}


@pytest.fixture
def ceph() -> FakeCeph:
    return FakeCeph()


def pool_props(**overrides: Any) -> dict[str, Any]:
    props = PoolInputs(connection=CONNECTION, name="rbd-pool", pgNum=32, size=3, autoscaleMode="off", application="rbd", adopt=False, allowDeletion=False)
    return {**props, **overrides}


def client_props(**overrides: Any) -> dict[str, Any]:
    caps = Caps.for_profile("profile-rbd", "rbd-pool").as_dict()
    return {**ClientInputs(connection=CONNECTION, name="proxmox", caps=caps, adopt=False), "key": None, **overrides}


# -- pool ---------------------------------------------------------------------------------


def test_pool_create_runs_the_runbooks_commands(ceph: FakeCeph) -> None:
    result = PoolProvider(ceph.executor).create(pool_props())
    assert result.id == "rbd-pool"
    assert ["ceph", "osd", "pool", "create", "rbd-pool", "32", "32", "replicated"] in ceph.commands
    assert ["ceph", "osd", "pool", "set", "rbd-pool", "pg_autoscale_mode", "off"] in ceph.commands
    assert ["rbd", "pool", "init", "rbd-pool"] in ceph.commands
    assert result.outs["application"] == "rbd"


def test_numbers_from_the_engine_reach_ceph_as_integers(ceph: FakeCeph) -> None:
    """The engine hands dynamic providers floats; ``pg_num 32.0`` is not a command Ceph accepts."""
    PoolProvider(ceph.executor).create(pool_props(pgNum=32.0, size=3.0))
    assert ["ceph", "osd", "pool", "create", "rbd-pool", "32", "32", "replicated"] in ceph.commands


def test_pool_create_reports_erange_with_a_fix(ceph: FakeCeph) -> None:
    with pytest.raises(OperatorError, match=r"ERANGE.*Lower ceph.pool.pgNum"):
        PoolProvider(ceph.executor).create(pool_props(pgNum=256))


def test_pool_exists_is_checked_not_inferred(ceph: FakeCeph) -> None:
    """``ceph osd pool create`` exits 0 for an existing pool whatever its pg_num: existence is looked up."""
    ceph.pools["rbd-pool"] = {"pg_num": 8, "size": 3, "pg_autoscale_mode": "off", "apps": {}}
    with pytest.raises(OperatorError, match=r"already exists.*adopt\.pool true"):
        PoolProvider(ceph.executor).create(pool_props())
    assert not ceph.ran("ceph osd pool create")


def test_pool_adoption_converges_the_existing_pool(ceph: FakeCeph) -> None:
    ceph.pools["rbd-pool"] = {"pg_num": 8, "size": 2, "pg_autoscale_mode": "warn", "apps": {}}
    outs = PoolProvider(ceph.executor).create(pool_props(adopt=True)).outs
    assert (outs["pgNum"], outs["size"], outs["autoscaleMode"], outs["application"]) == (32, 3, "off", "rbd")


def test_pool_read_sees_pg_num_drift_and_diff_reports_it(ceph: FakeCeph) -> None:
    provider = PoolProvider(ceph.executor)
    outs = provider.create(pool_props()).outs
    ceph.pools["rbd-pool"]["pg_num"] = 64
    read = provider.read("rbd-pool", outs)
    assert read.outs["pgNum"] == 64
    assert provider.diff("rbd-pool", read.outs, pool_props()).changes is True


def test_pool_pg_num_is_not_drift_when_the_autoscaler_owns_it(ceph: FakeCeph) -> None:
    provider = PoolProvider(ceph.executor)
    outs = provider.create(pool_props(autoscaleMode="on")).outs
    ceph.pools["rbd-pool"]["pg_num"] = 128
    read = provider.read("rbd-pool", outs)
    assert provider.diff("rbd-pool", read.outs, pool_props(autoscaleMode="on")).changes is False


def test_pool_missing_rbd_application_is_drift_and_update_repairs_it(ceph: FakeCeph) -> None:
    provider = PoolProvider(ceph.executor)
    outs = provider.create(pool_props()).outs
    ceph.pools["rbd-pool"]["apps"] = {}
    read = provider.read("rbd-pool", outs)
    assert provider.diff("rbd-pool", read.outs, pool_props()).changes is True
    provider.update("rbd-pool", read.outs, pool_props())
    assert "rbd" in ceph.pools["rbd-pool"]["apps"]


def test_pool_gone_reads_as_deleted(ceph: FakeCeph) -> None:
    provider = PoolProvider(ceph.executor)
    outs = provider.create(pool_props()).outs
    del ceph.pools["rbd-pool"]
    assert provider.read("rbd-pool", outs).id == ""


def test_pool_is_retained_on_delete_by_default(ceph: FakeCeph) -> None:
    provider = PoolProvider(ceph.executor)
    outs = provider.create(pool_props()).outs
    provider.delete("rbd-pool", outs)
    assert "rbd-pool" in ceph.pools
    assert not ceph.ran("ceph osd pool delete")


def test_pool_deletion_refuses_while_images_exist(ceph: FakeCeph) -> None:
    provider = PoolProvider(ceph.executor)
    outs = provider.create(pool_props(allowDeletion=True)).outs
    ceph.images["rbd-pool"] = ["vm-101-disk-0"]
    with pytest.raises(OperatorError, match=r"refusing to delete Ceph pool rbd-pool.*vm-101-disk-0"):
        provider.delete("rbd-pool", outs)
    assert "rbd-pool" in ceph.pools


def test_pool_deletion_when_switched_on_and_empty(ceph: FakeCeph) -> None:
    provider = PoolProvider(ceph.executor)
    outs = provider.create(pool_props(allowDeletion=True)).outs
    provider.delete("rbd-pool", outs)
    assert "rbd-pool" not in ceph.pools


def test_pool_rename_is_a_replacement(ceph: FakeCeph) -> None:
    assert PoolProvider(ceph.executor).diff("rbd-pool", pool_props(), pool_props(name="rbd2")).replaces == ["name"]


def test_pool_dropped_ssh_is_a_clear_error(ceph: FakeCeph) -> None:
    ceph.drop_connection = True
    with pytest.raises(OperatorError, match=r"Ceph pool rbd-pool: SSH to .* dropped") as info:
        PoolProvider(ceph.executor).create(pool_props())
    assert not isinstance(info.value, PartiallyCreated)  # nothing was asked of Ceph yet: nothing to record


@pytest.mark.parametrize("step", ["ceph osd pool create", "ceph osd pool set", "rbd pool init"])
def test_pool_create_that_fails_after_asking_ceph_is_recorded_not_orphaned(ceph: FakeCeph, step: str) -> None:
    ceph.drop_after = step
    with pytest.raises(PartiallyCreated, match="the next `pulumi up` checks it and finishes it") as info:
        PoolProvider(ceph.executor).create(pool_props())
    assert (info.value.id_, info.value.outs["name"]) == ("rbd-pool", "rbd-pool")
    assert "rbd-pool" in ceph.pools  # it exists: the state must know it


def test_pool_create_refused_by_ceph_is_not_recorded(ceph: FakeCeph) -> None:
    with pytest.raises(OperatorError, match="ERANGE") as info:
        PoolProvider(ceph.executor).create(pool_props(pgNum=1024))
    assert not isinstance(info.value, PartiallyCreated)


# -- client -------------------------------------------------------------------------------


def test_client_create_uses_get_or_create_with_profile_rbd(ceph: FakeCeph) -> None:
    result = ClientProvider(ceph.executor).create(client_props())
    assert result.id == "client.proxmox"
    assert ["ceph", "auth", "get-or-create", "client.proxmox", "mon", "profile rbd", "osd", "profile rbd pool=rbd-pool", "-f", "json"] in ceph.commands
    assert result.outs["key"].startswith("AQD")


def test_client_create_that_drops_after_get_or_create_is_recorded(ceph: FakeCeph) -> None:
    ceph.drop_after = "ceph auth get-or-create"
    with pytest.raises(PartiallyCreated) as info:
        ClientProvider(ceph.executor).create(client_props())
    assert info.value.id_ == "client.proxmox" and "client.proxmox" in ceph.clients


def test_client_create_refused_by_ceph_is_not_recorded(ceph: FakeCeph, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = ceph.answer
    monkeypatch.setattr(ceph, "answer", lambda argv: Result(22, "", "Error EINVAL: bad caps") if "get-or-create" in argv else answer(argv))
    with pytest.raises(OperatorError, match="get-or-create client.proxmox failed") as info:
        ClientProvider(ceph.executor).create(client_props())
    assert not isinstance(info.value, PartiallyCreated)


def test_client_existing_is_refused_without_adoption(ceph: FakeCeph) -> None:
    ceph.clients["client.proxmox"] = {"key": "AQDold==", "caps": {"mon": "allow r"}}
    with pytest.raises(OperatorError, match=r"already exists.*adopt\.client true") as info:
        ClientProvider(ceph.executor).create(client_props())
    assert "AQDold" not in str(info.value)


def test_client_adoption_sets_the_configured_caps(ceph: FakeCeph) -> None:
    ceph.clients["client.proxmox"] = {"key": "AQDold==", "caps": {"mon": "allow r", "osd": "allow *"}}
    outs = ClientProvider(ceph.executor).create(client_props(adopt=True)).outs
    assert outs["caps"] == {"mon": "profile rbd", "osd": "profile rbd pool=rbd-pool"}
    assert outs["key"] == "AQDold=="


def test_client_widened_caps_are_drift_and_update_narrows_them(ceph: FakeCeph) -> None:
    provider = ClientProvider(ceph.executor)
    outs = provider.create(client_props()).outs
    ceph.clients["client.proxmox"]["caps"]["osd"] = "allow *"
    read = provider.read("client.proxmox", outs)
    assert provider.diff("client.proxmox", read.outs, client_props()).changes is True
    provider.update("client.proxmox", read.outs, client_props())
    assert ceph.clients["client.proxmox"]["caps"]["osd"] == "profile rbd pool=rbd-pool"


def test_client_deleted_reads_as_gone(ceph: FakeCeph) -> None:
    provider = ClientProvider(ceph.executor)
    outs = provider.create(client_props()).outs
    del ceph.clients["client.proxmox"]
    assert provider.read("client.proxmox", outs).id == ""


def test_client_deleted_behind_the_states_back_is_a_change_and_update_makes_it_again(ceph: FakeCeph) -> None:
    """`pulumi up --refresh=false`: the VMs cannot be refreshed without the client, so diff itself looks."""
    provider = ClientProvider(ceph.executor)
    outs = provider.create(client_props()).outs
    del ceph.clients["client.proxmox"]
    diff = provider.diff("client.proxmox", outs, client_props())
    assert diff.changes is True and "key" not in (diff.stables or [])
    again = provider.update("client.proxmox", outs, client_props()).outs
    assert ceph.clients["client.proxmox"]["caps"] == {"mon": "profile rbd", "osd": "profile rbd pool=rbd-pool"}
    assert again["key"] == ceph.clients["client.proxmox"]["key"]


def test_client_same_caps_with_other_spacing_is_no_change(ceph: FakeCeph) -> None:
    provider = ClientProvider(ceph.executor)
    outs = provider.create(client_props()).outs
    spaced = client_props(caps={"mon": "profile  rbd", "osd": "profile rbd  pool=rbd-pool"})
    assert provider.diff("client.proxmox", outs, spaced).changes is False


def test_client_delete_removes_it_and_tolerates_it_gone(ceph: FakeCeph) -> None:
    provider = ClientProvider(ceph.executor)
    outs = provider.create(client_props()).outs
    provider.delete("client.proxmox", outs)
    assert "client.proxmox" not in ceph.clients
    provider.delete("client.proxmox", outs)


def test_client_garbage_answer_never_echoes_output(ceph: FakeCeph, monkeypatch: pytest.MonkeyPatch) -> None:
    from clients.ssh import Result

    monkeypatch.setattr(ceph, "answer", lambda argv: Result(0, "[client.proxmox]\n\tkey = AQDsecret==\n", ""))
    with pytest.raises(OperatorError) as info:
        ClientProvider(ceph.executor).create(client_props())
    assert "AQDsecret" not in str(info.value)
