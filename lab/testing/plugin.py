"""The lab's pytest fixtures, one definition for every suite (tests/integration, tests/drill):
a suite's conftest.py imports the ones it uses.

- ``lab_state``: the lab up once a session (lab.json's content), left as it was found: a lab that
  was down is taken down again;
- ``lab_access``: :class:`~lab.testing.seed.LabAccess` on that lab, every node restored first;
- ``control``: the lab API's fault channel, every injected failure cleared before and after.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import lab
from lab.pve.control import Control
from lab.testing.seed import LabAccess


@pytest.fixture(scope="session")
def lab_state() -> Iterator[dict[str, Any]]:
    was_up = lab.paths.LAB_JSON.exists()
    state = lab.up(log=lambda _line: None)
    if "pve" not in state or not state["pve"].get("ceph_backed"):
        pytest.fail("the lab came up without its Ceph-backed PVE API (lab/pve): these tests need it")
    yield state
    if not was_up:
        lab.down(log=lambda _line: None)


@pytest.fixture(scope="session")
def lab_access(lab_state: dict[str, Any]) -> LabAccess:
    access = LabAccess(lab_state)
    access.restore_all()
    return access


@pytest.fixture
def control() -> Iterator[Control]:
    """The lab API's fault channel; every injected failure is cleared afterwards, whatever happened."""
    channel = Control()
    channel.clear_failures()
    yield channel
    channel.clear_failures()
