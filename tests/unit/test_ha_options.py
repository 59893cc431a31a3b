"""The HA options' provider (components/ha_options.py), against the fake Ceph (the owner record)
and a fake /cluster/options that answers as PVE's get_options does (the property strings parsed)."""

from __future__ import annotations

from typing import Any

import pytest

from components import ha_options
from components.errors import OperatorError
from components.ha_options import OWNER_KEY, HaOptionsInputs, HaOptionsProvider
from tests.unit.fake_ceph import FakeCeph

CONNECTION = {"host": "127.10.10.101", "port": 2222, "user": "root", "privateKey": "unused", "knownHosts": ""}
API = {"endpoint": "https://127.0.0.1:8006", "token": "t"}
OWNER, OTHER = "pulumi-stack.p.a", "pulumi-stack.p.b"


class Options:
    """GET/PUT /cluster/options over datacenter.cfg's lines (`ha`, `crs` and the rest as text)."""

    def __init__(self, **cfg: str) -> None:
        self.cfg = dict(cfg)
        self.puts: list[dict[str, str]] = []

    def get(self) -> dict[str, Any]:
        return {k: ha_options.parsed(v) if k in ("ha", "crs") else v for k, v in self.cfg.items()}

    def put(self, **arguments: str) -> None:
        self.puts.append(dict(arguments))
        for key in (arguments.pop("delete", "") or "").split(","):
            self.cfg.pop(key, None)
        self.cfg.update(arguments)


class Api:
    def __init__(self, options: Options) -> None:
        self.cluster = type("Cluster", (), {"options": options})()


@pytest.fixture
def world() -> tuple[FakeCeph, Options, HaOptionsProvider]:
    ceph, options = FakeCeph(), Options(keyboard="en-us")
    return ceph, options, HaOptionsProvider(ceph.executor, lambda _: Api(options))  # type: ignore[arg-type,return-value]


def props(owner: str = OWNER, **fields: Any) -> dict[str, Any]:
    return {**HaOptionsInputs(api=API, connection=CONNECTION, owner=owner, shutdownPolicy=None, crs=None, rebalanceOnStart=None), **fields}


def test_create_sets_only_the_keys_named_and_records_the_owner(world) -> None:
    ceph, options, provider = world
    options.cfg["crs"] = "ha=basic"
    outs = provider.create(props(shutdownPolicy="migrate", rebalanceOnStart=True)).outs
    assert options.cfg == {"keyboard": "en-us", "ha": "shutdown_policy=migrate", "crs": "ha=basic,ha-rebalance-on-start=1"}
    assert outs["seen"] == {"shutdownPolicy": "migrate", "crs": "basic", "rebalanceOnStart": True} and outs["setBy"] == OWNER
    assert ceph.config_keys[OWNER_KEY] == OWNER


def test_a_policy_changed_by_hand_is_drift_and_update_sets_it_again(world) -> None:
    _, options, provider = world
    outs = provider.create(props(shutdownPolicy="freeze")).outs
    assert provider.diff(ha_options.ID, provider.read(ha_options.ID, outs).outs, props(shutdownPolicy="freeze")).changes is False
    options.cfg["ha"] = "shutdown_policy=failover"  # pvesh set /cluster/options --ha shutdown_policy=failover
    read = provider.read(ha_options.ID, outs).outs
    assert read["seen"]["shutdownPolicy"] == "failover"
    assert provider.diff(ha_options.ID, read, props(shutdownPolicy="freeze")).changes is True
    provider.update(ha_options.ID, read, props(shutdownPolicy="freeze"))
    assert options.cfg["ha"] == "shutdown_policy=freeze"


def test_a_key_removed_from_the_config_goes_back_to_pves_default_the_rest_kept(world) -> None:
    _, options, provider = world
    outs = provider.create(props(shutdownPolicy="freeze", crs="static", rebalanceOnStart=True)).outs
    new = props(shutdownPolicy="freeze", crs="static")
    assert provider.diff(ha_options.ID, outs, new).changes is True
    provider.update(ha_options.ID, outs, new)
    assert options.cfg["crs"] == "ha=static"
    outs = provider.update(ha_options.ID, provider.read(ha_options.ID, new | {"setBy": OWNER}).outs, props(shutdownPolicy="freeze")).outs
    assert "crs" not in options.cfg and options.puts[-1]["delete"] == "crs"
    provider.delete(ha_options.ID, outs)
    assert options.cfg == {"keyboard": "en-us"}


def test_destroy_gives_back_what_the_stack_set_and_its_owner_record(world) -> None:
    ceph, options, provider = world
    outs = provider.create(props(shutdownPolicy="migrate")).outs
    provider.delete(ha_options.ID, outs)
    assert options.cfg == {"keyboard": "en-us"} and OWNER_KEY not in ceph.config_keys


def test_another_stacks_settings_are_read_only_the_same_values_and_refused_others(world) -> None:
    ceph, options, provider = world
    provider.create(props(OTHER, shutdownPolicy="migrate"))
    mine = provider.create(props(shutdownPolicy="migrate")).outs  # the same value: checked, not set
    assert mine["setBy"] == OTHER and len(options.puts) == 1
    failures = provider.check({}, props(shutdownPolicy="freeze")).failures
    assert len(failures) == 1 and failures[0].property == "shutdownPolicy"
    reason = failures[0].reason
    assert "stack p.b owns them (ha.shutdownPolicy migrate); this stack asks for ha.shutdownPolicy freeze" in reason
    assert f"ceph config-key rm {OWNER_KEY}" in reason
    with pytest.raises(OperatorError, match="stack p.b owns them"):
        provider.create(props(shutdownPolicy="freeze"))
    provider.delete(ha_options.ID, mine)  # not this stack's: left as it is
    assert options.cfg["ha"] == "shutdown_policy=migrate" and ceph.config_keys[OWNER_KEY] == OTHER


def test_the_put_keeps_the_other_parts_of_the_property_strings() -> None:
    current = {"crs": {"ha": "static", "ha-rebalance-on-start": 1}}
    assert ha_options.put_arguments(current, {"crs": "basic"}) == {"crs": "ha=basic,ha-rebalance-on-start=1"}
    assert ha_options.put_arguments(current, {}, ("rebalanceOnStart",)) == {"crs": "ha=static"}
    assert ha_options.put_arguments(current, {}, ("crs", "rebalanceOnStart")) == {"delete": "crs"}
    assert ha_options.put_arguments({}, {}, ("shutdownPolicy",)) == {}
    assert ha_options.effective({}) == {"shutdownPolicy": "conditional", "crs": "basic", "rebalanceOnStart": False}
