"""CephScrubWindow's provider (runbook 8), called directly against the fake Ceph."""

from __future__ import annotations

from typing import Any

import pytest

from components.ceph_scrub import ScrubWindowInputs, ScrubWindowProvider
from components.errors import OperatorError, PartiallyCreated
from tests.unit.fake_ceph import FakeCeph

CONNECTION = {"host": "127.10.10.101", "port": 2222, "user": "root", "privateKey": "unused", "knownHosts": ""}
BEGIN, END = ("osd", "osd_scrub_begin_hour"), ("osd", "osd_scrub_end_hour")


@pytest.fixture
def ceph() -> FakeCeph:
    return FakeCeph()


def props(**overrides: Any) -> dict[str, Any]:
    return {**ScrubWindowInputs(connection=CONNECTION, beginHour=22, endHour=6, owner=""), **overrides}


def test_create_sets_the_window_with_ceph_config_set(ceph: FakeCeph) -> None:
    result = ScrubWindowProvider(ceph.executor).create(props())
    assert ["ceph", "config", "set", "osd", "osd_scrub_begin_hour", "22"] in ceph.commands
    assert ["ceph", "config", "set", "osd", "osd_scrub_end_hour", "6"] in ceph.commands
    assert (result.outs["beginHour"], result.outs["endHour"]) == (22, 6)


def test_hours_from_the_engine_reach_ceph_as_integers(ceph: FakeCeph) -> None:
    ScrubWindowProvider(ceph.executor).create(props(beginHour=22.0, endHour=6.0))
    assert ceph.config[BEGIN] == "22" and ceph.config[END] == "6"


def test_a_window_changed_by_hand_is_drift_and_update_repairs_it(ceph: FakeCeph) -> None:
    provider = ScrubWindowProvider(ceph.executor)
    outs = provider.create(props()).outs
    ceph.config[BEGIN] = "8"  # ceph config set osd osd_scrub_begin_hour 8, by hand
    read = provider.read("osd-scrub-window", outs)
    assert read.outs["beginHour"] == 8
    diff = provider.diff("osd-scrub-window", read.outs, props())
    assert diff.changes is True
    provider.update("osd-scrub-window", read.outs, props())
    assert ceph.config[BEGIN] == "22"


def test_a_window_removed_by_hand_reads_as_cephs_default_and_is_drift(ceph: FakeCeph) -> None:
    provider = ScrubWindowProvider(ceph.executor)
    outs = provider.create(props()).outs
    ceph.config.clear()  # ceph config rm ..., by hand
    read = provider.read("osd-scrub-window", outs)
    assert (read.outs["beginHour"], read.outs["endHour"]) == (0, 0)
    assert provider.diff("osd-scrub-window", read.outs, props()).changes is True


def test_an_unchanged_window_is_no_change(ceph: FakeCeph) -> None:
    provider = ScrubWindowProvider(ceph.executor)
    outs = provider.create(props()).outs
    read = provider.read("osd-scrub-window", outs)
    assert provider.diff("osd-scrub-window", read.outs, props(beginHour=22.0, endHour=6.0)).changes is False


def test_update_sets_only_what_differs(ceph: FakeCeph) -> None:
    provider = ScrubWindowProvider(ceph.executor)
    outs = provider.create(props()).outs
    ceph.commands.clear()
    provider.update("osd-scrub-window", outs, props(beginHour=23))
    assert [c for c in ceph.commands if c[2] == "set"] == [["ceph", "config", "set", "osd", "osd_scrub_begin_hour", "23"]]


def test_delete_restores_cephs_default(ceph: FakeCeph) -> None:
    provider = ScrubWindowProvider(ceph.executor)
    outs = provider.create(props()).outs
    provider.delete("osd-scrub-window", outs)
    assert ["ceph", "config", "rm", "osd", "osd_scrub_begin_hour"] in ceph.commands
    assert ["ceph", "config", "rm", "osd", "osd_scrub_end_hour"] in ceph.commands
    assert ceph.config == {}


def test_a_connection_dropped_after_a_set_is_recorded_not_orphaned(ceph: FakeCeph) -> None:
    ceph.drop_after = "ceph config set osd osd_scrub_begin_hour"
    with pytest.raises(PartiallyCreated, match="scrub window: SSH to .* dropped") as info:
        ScrubWindowProvider(ceph.executor).create(props())
    assert info.value.id_ == "osd-scrub-window"


def test_a_create_that_could_not_reach_ceph_is_not_recorded(ceph: FakeCeph) -> None:
    ceph.drop_connection = True
    with pytest.raises(OperatorError, match="scrub window: SSH to") as info:
        ScrubWindowProvider(ceph.executor).create(props())
    assert not isinstance(info.value, PartiallyCreated)


def test_a_value_that_is_not_an_hour_is_an_error(ceph: FakeCeph) -> None:
    ceph.config[BEGIN] = "garbage"
    with pytest.raises(OperatorError, match=r"ceph config get osd osd_scrub_begin_hour: expected an hour, got 'garbage'"):
        ScrubWindowProvider(ceph.executor).read("osd-scrub-window", props())


# -- one window, several stacks (issue #21): the first stack to set it owns it --

A, B = "pulumi-stack.pve-ceph-ha.a", "pulumi-stack.pve-ceph-ha.b"


def owned(owner: str, **overrides: Any) -> dict[str, Any]:
    return {**props(owner=owner, **overrides), "setBy": None}


def test_the_first_stack_owns_the_window_and_a_second_with_the_same_window_only_reads_it(ceph: FakeCeph) -> None:
    provider = ScrubWindowProvider(ceph.executor)
    assert provider.create(owned(A)).outs["setBy"] == A
    assert ceph.config_keys == {"pve-ceph-ha/scrub-window/owner": A}
    sets = len([c for c in ceph.commands if c[:3] == ["ceph", "config", "set"]])
    outs = provider.create(owned(B)).outs
    assert outs["setBy"] == A
    assert len([c for c in ceph.commands if c[:3] == ["ceph", "config", "set"]]) == sets  # B set nothing
    provider.delete("osd-scrub-window", outs)  # B's destroy
    assert ceph.config[BEGIN] == "22" and ceph.config_keys  # A's window and ownership stay
    read = provider.read("osd-scrub-window", provider.create(owned(A)).outs)
    assert provider.diff("osd-scrub-window", read.outs, owned(A)).changes is False


def test_a_second_stack_asking_for_another_window_is_refused_naming_the_owner(ceph: FakeCeph) -> None:
    provider = ScrubWindowProvider(ceph.executor)
    provider.create(owned(A))
    with pytest.raises(OperatorError) as error:
        provider.create(owned(B, beginHour=23, endHour=5))
    message = str(error.value)
    assert "stack pve-ceph-ha.a owns it (22-6)" in message and "23-5" in message and "ceph.scrubWindow" in message
    assert ceph.config[BEGIN] == "22"


def test_a_non_owner_never_proposes_to_change_the_owners_window(ceph: FakeCeph, capsys: pytest.CaptureFixture[str]) -> None:
    provider = ScrubWindowProvider(ceph.executor)
    provider.create(owned(A))
    outs = provider.create(owned(B)).outs
    ceph.config[BEGIN] = "21"  # the owner changed its window
    read = provider.read("osd-scrub-window", outs)
    assert provider.diff("osd-scrub-window", read.outs, owned(B)).changes is False
    assert "owns it (21-6)" in capsys.readouterr().err


def test_the_owners_destroy_resets_the_window_and_its_ownership(ceph: FakeCeph) -> None:
    provider = ScrubWindowProvider(ceph.executor)
    outs = provider.create(owned(A)).outs
    provider.delete("osd-scrub-window", outs)
    assert BEGIN not in ceph.config and ceph.config_keys == {}


def test_a_window_set_before_the_owner_key_is_claimed_by_the_stack_that_holds_it(ceph: FakeCeph) -> None:
    provider = ScrubWindowProvider(ceph.executor)
    outs = provider.create(props()).outs  # the program before issue #21: no owner
    read = provider.read("osd-scrub-window", outs)
    assert provider.diff("osd-scrub-window", read.outs, owned(A)).changes is True
    assert provider.update("osd-scrub-window", read.outs, owned(A)).outs["setBy"] == A
    assert ceph.config_keys == {"pve-ceph-ha/scrub-window/owner": A}
