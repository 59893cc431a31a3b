"""lab/testing/stack.py drifts_then_repair: several drifts in one round, each of a resource of its
own, each one checked by name in the preview's plan, in the repair and in the clean preview after.

The engine is a stand-in here (a world of resources the drifts change and `up` repairs, whose
preview emits the engine's events): these tests are of the helper's checks, which the engine
tests (test_end_to_end, test_dynamic_resources) rely on to fail when a drift goes unseen."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pulumi import automation as auto

from lab.testing.stack import Drift, drifts_then_repair

STACK = "e2e"


class World:
    """Resources by name, each drifted or not; a preview plans an update of each drifted one the
    program would see (``blind``: the ones its refresh misses), `up` repairs what it sees."""

    def __init__(self, *resources: str, blind: tuple[str, ...] = (), unrepaired: tuple[str, ...] = ()) -> None:
        self.drifted = dict.fromkeys(resources, False)
        self.blind = blind
        self.unrepaired = unrepaired
        self.name = STACK
        self.stack = SimpleNamespace(preview=self._preview)
        self.log: list[str] = []

    def _out(self, line: str) -> None:
        self.log.append(line)

    def _preview(self, on_event: Any, **_: Any) -> None:
        for resource, drifted in self.drifted.items():
            seen = drifted and resource not in self.blind
            for op in (auto.OpType.REFRESH, auto.OpType.UPDATE if seen else auto.OpType.SAME):
                metadata = SimpleNamespace(op=op, urn=f"urn:pulumi:{STACK}::pve-ceph-ha::t::{STACK}-{resource}")
                on_event(SimpleNamespace(resource_pre_event=SimpleNamespace(metadata=metadata)))

    def up(self) -> None:
        for resource in self.drifted:
            if resource not in self.blind and resource not in self.unrepaired:
                self.drifted[resource] = False

    def text(self) -> str:
        return "\n".join(self.log)

    def drift(self, what: str, resource: str) -> Drift:
        return Drift(what, resource, lambda: self.drifted.__setitem__(resource, True), lambda: not self.drifted[resource])


def test_drifts_of_three_resources_are_each_seen_and_repaired() -> None:
    world = World("rbd-pool", "cephx-client", "storage-storage")
    drifts_then_repair(world, world.drift("pg_num", "rbd-pool"), world.drift("caps", "cephx-client"), world.drift("monhost", "storage-storage"))  # type: ignore[arg-type]
    assert not any(world.drifted.values())


def test_a_drift_the_preview_misses_is_named_though_the_others_show() -> None:
    world = World("rbd-pool", "cephx-client", blind=("cephx-client",))
    with pytest.raises(AssertionError, match=r"preview did not show \['caps'\]"):
        drifts_then_repair(world, world.drift("pg_num", "rbd-pool"), world.drift("caps", "cephx-client"))  # type: ignore[arg-type]


def test_a_drift_up_leaves_is_named() -> None:
    world = World("rbd-pool", "cephx-client", unrepaired=("rbd-pool",))
    with pytest.raises(AssertionError, match=r"pulumi up did not undo \['pg_num'\]"):
        drifts_then_repair(world, world.drift("pg_num", "rbd-pool"), world.drift("caps", "cephx-client"))  # type: ignore[arg-type]


def test_two_drifts_of_one_resource_are_refused_in_one_round() -> None:
    world = World("rbd-pool")
    with pytest.raises(AssertionError, match="two drifts of one resource"):
        drifts_then_repair(world, world.drift("pg_num", "rbd-pool"), world.drift("application", "rbd-pool"))  # type: ignore[arg-type]
    assert world.drifted == {"rbd-pool": False}  # refused before any drift is made
