"""RbdStorage's create/read/diff/update/delete against fakepve served over HTTPS on loopback.

fakepve stands in for the PVE API only here (unit level); the lab's PVE API checks the key
against the real Ceph (lab/tests, tests/integration).
"""

from __future__ import annotations

from typing import Any

import pytest

from clients.pve.api import api_props
from components.errors import OperatorError, PartiallyCreated
from components.pve_storage import StorageInputs, StorageProvider

TOKEN_ID, TOKEN_SECRET = "root@pam!pulumi", "5e5e5e5e-1111-2222-3333-444444444444"


@pytest.fixture
def pve(fakepve: Any) -> Any:
    fakepve.apitokens[TOKEN_ID] = TOKEN_SECRET
    return fakepve


@pytest.fixture
def props(pve: Any, fakepve_cafile: str) -> dict[str, Any]:
    return dict(
        StorageInputs(
            api=api_props(pve.url, f"{TOKEN_ID}={TOKEN_SECRET}", True, fakepve_cafile),
            storageId="ceph-rbd",
            pool="rbd-pool",
            monhost="127.10.10.101 127.10.10.102 127.10.10.103",
            username="proxmox",
            key="AQDxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx==",
            content="images",
            nodes=sorted(pve.nodes),
            adopt=False,
        )
    )


def provider() -> StorageProvider:
    return StorageProvider(poll_interval=0.05)


def test_create_registers_an_rbd_storage_active_on_every_node(pve: Any, props: dict) -> None:
    result = provider().create(props)
    assert result.id == "ceph-rbd"
    store = pve.storages["ceph-rbd"]
    assert (store["type"], store["pool"], store["username"]) == ("rbd", "rbd-pool", "proxmox")
    assert store["monhost"] == "127.10.10.101 127.10.10.102 127.10.10.103"
    assert result.outs["activeNodes"] == sorted(pve.nodes)


def test_the_key_reaches_pve_as_a_keyring_file(props: dict) -> None:
    params = provider().params(props)
    assert params["keyring"] == f"[client.proxmox]\n\tkey = {props['key']}\n"


def test_create_refuses_an_existing_storage_without_adoption(pve: Any, props: dict) -> None:
    provider().create(props)
    with pytest.raises(OperatorError, match=r"already exists.*adopt\.storage true"):
        provider().create(props)


def test_create_adopts_an_existing_storage_when_told(pve: Any, props: dict) -> None:
    provider().create({**props, "monhost": "127.10.10.109"})
    result = provider().create({**props, "adopt": True})
    assert result.outs["monhost"] == props["monhost"]
    assert pve.storages["ceph-rbd"]["monhost"] == props["monhost"]


def test_adoption_refuses_a_storage_of_another_type(pve: Any, props: dict) -> None:
    with pytest.raises(OperatorError, match="type dir, not rbd"):
        provider().create({**props, "storageId": "local", "adopt": True})


def test_read_sees_an_edited_monhost_and_diff_reports_it(pve: Any, props: dict) -> None:
    outs = provider().create(props).outs
    pve.storages["ceph-rbd"]["monhost"] = "10.9.9.9"
    read = provider().read("ceph-rbd", outs)
    assert read.outs["monhost"] == "10.9.9.9"
    diff = provider().diff("ceph-rbd", read.outs, props)
    assert diff.changes is True and not diff.replaces


def test_read_reports_a_deleted_storage_as_gone(pve: Any, props: dict) -> None:
    outs = provider().create(props).outs
    del pve.storages["ceph-rbd"]
    assert provider().read("ceph-rbd", outs).id == ""


def test_no_diff_when_nothing_changed(pve: Any, props: dict) -> None:
    outs = provider().create(props).outs
    read = provider().read("ceph-rbd", outs)
    assert provider().diff("ceph-rbd", read.outs, props).changes is False


def test_refresh_finds_a_storage_gone_inactive_and_diff_proposes_to_wait_again(pve: Any, props: dict) -> None:
    outs = provider().create(props).outs
    assert outs["inactiveNodes"] == []
    pve.storages["ceph-rbd"]["active"] = 0  # PVE: "storage 'ceph-rbd' is not online"
    read = provider().read("ceph-rbd", outs)
    assert read.outs["inactiveNodes"] == sorted(pve.nodes)
    assert provider().diff("ceph-rbd", read.outs, props).changes is True
    pve.storages["ceph-rbd"]["active"] = 1
    read = provider().read("ceph-rbd", outs)
    assert read.outs["inactiveNodes"] == [] and provider().diff("ceph-rbd", read.outs, props).changes is False


def test_renaming_the_storage_replaces_it(props: dict) -> None:
    diff = provider().diff("ceph-rbd", props, {**props, "storageId": "ceph-rbd2"})
    assert diff.replaces == ["storageId"]


def test_a_new_key_is_an_update(props: dict) -> None:
    assert provider().diff("ceph-rbd", props, {**props, "key": "AQDnew=="}).changes is True


def test_update_repairs_drift(pve: Any, props: dict) -> None:
    outs = provider().create(props).outs
    pve.storages["ceph-rbd"]["monhost"] = "10.9.9.9"
    result = provider().update("ceph-rbd", outs, props)
    assert pve.storages["ceph-rbd"]["monhost"] == props["monhost"]
    assert result.outs["monhost"] == props["monhost"]


def test_delete_removes_the_storage_and_tolerates_it_gone(pve: Any, props: dict) -> None:
    outs = provider().create(props).outs
    provider().delete("ceph-rbd", outs)
    assert "ceph-rbd" not in pve.storages
    provider().delete("ceph-rbd", outs)


def test_storage_that_never_becomes_active_fails_with_pves_reason(pve: Any, props: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("components.pve_storage.ACTIVE_DEADLINE_S", 0.3)
    pve.ceph["down"] = True
    with pytest.raises(OperatorError) as info:
        provider().create(props)
    message = str(info.value)
    assert "not active on" in message and "rbd error" in message
    assert props["key"] not in message
    assert isinstance(info.value, PartiallyCreated) and info.value.id_ == "ceph-rbd"  # registered: the state records it
    assert "ceph-rbd" in pve.storages


def test_a_refused_post_is_not_recorded(pve: Any, props: dict) -> None:
    with pytest.raises(OperatorError, match="401") as info:
        provider().create({**props, "api": {**props["api"], "token": f"{TOKEN_ID}=00000000-0000-0000-0000-000000000000"}})
    assert not isinstance(info.value, PartiallyCreated)


def test_an_offline_node_ends_the_wait_at_once() -> None:
    from proxmoxer.core import ResourceException

    class Api:
        """The node's status is proxied to a node that is down (595), and the cluster says it is offline."""

        def __init__(self) -> None:
            self.path: list[str] = []

        def __getattr__(self, name: str) -> Any:
            self.path.append(name)
            return self

        def __call__(self, *args: str) -> Any:
            self.path.extend(args)
            return self

        def get(self) -> Any:
            path, self.path = self.path, []
            if path[:2] == ["cluster", "status"]:
                return [{"type": "node", "name": "pve-node1", "online": 1}, {"type": "node", "name": "pve-node3", "online": 0}]
            if path[1] == "pve-node3":
                raise ResourceException(595, "No route to host", "")
            return {"active": 1}

    import time

    start = time.monotonic()
    with pytest.raises(OperatorError, match="cannot become active on pve-node3: the cluster reports it offline") as info:
        provider().wait_active(Api(), "ceph-rbd", ["pve-node1", "pve-node3"])
    assert time.monotonic() - start < 1 and "proxmox.nodes" in str(info.value)
    # and a refresh during the outage finds nothing to change: the node is down, not the storage
    assert provider().inactive_nodes(Api(), "ceph-rbd", ["pve-node1", "pve-node3"]) == []


def test_a_wrong_token_is_a_clear_error_without_the_token(pve: Any, props: dict) -> None:
    bad = {**props, "api": {**props["api"], "token": f"{TOKEN_ID}=00000000-0000-0000-0000-000000000000"}}
    with pytest.raises(OperatorError) as info:
        provider().create(bad)
    assert "401" in str(info.value)
    assert "00000000-0000" not in str(info.value)


def test_tls_verification_refuses_an_unknown_certificate(pve: Any, props: dict, tmp_path: Any) -> None:
    from fakepve.certs import make_cert

    other_ca, _, _ = make_cert(str(tmp_path), name="other")
    with pytest.raises(OperatorError, match="SSL|certificate"):
        provider().create({**props, "api": {**props["api"], "caFile": other_ca}})


def test_an_answer_that_is_not_a_storage_is_never_taken_for_one() -> None:
    """proxmoxer turns a 200 that is not JSON (a proxy's HTML page) into ``{"errors": b"..."}``."""

    class HtmlApi:
        def storage(self, _id: str) -> Any:
            return self

        def get(self) -> dict[str, bytes]:
            return {"errors": b"<html>maintenance</html>"}

    with pytest.raises(OperatorError, match="unexpected answer from the PVE API"):
        provider().observe(HtmlApi(), "ceph-rbd")
