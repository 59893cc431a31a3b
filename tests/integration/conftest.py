"""The lab, brought up once for the integration tests (and left as it was found when done).

Every test here also checks the lab's record of the API calls made during it: the `proxmoxve`
plugin (bpg's Go client, User-Agent Go-http-client) must never have met an answer the lab does
not model (a 501 for a method PVE has) or a fault of the lab itself (a 500 from its own bug).
Such an answer is not what PVE would have said, so whatever the test saw proves nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import lab
import lab.pve
from lab.pve.control import Control

PLUGIN = "Go-http-client"  # the proxmoxve plugin's User-Agent in the lab's call log


@pytest.fixture(scope="session")
def lab_state() -> Iterator[dict[str, Any]]:
    was_up = lab.paths.LAB_JSON.exists()
    state = lab.up(log=lambda _line: None)
    if "pve" not in state:
        pytest.fail("the lab came up without its PVE API (lab/pve): the integration tests need it")
    yield state
    if not was_up:
        lab.down(log=lambda _line: None)


@pytest.fixture
def control() -> Iterator[Control]:
    """The lab API's fault channel; every injected failure is cleared afterwards, whatever happened."""
    channel = Control()
    channel.clear_failures()
    yield channel
    channel.clear_failures()


@pytest.fixture(autouse=True)
def plugin_met_only_pve_answers(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.time()
    yield
    if "lab_state" not in request.fixturenames and not lab.paths.LAB_JSON.exists():
        return  # a test that never reached the lab
    strange = lab.pve.unmodelled(since=started, agent=PLUGIN)
    assert not strange, "the proxmoxve plugin met answers that are not PVE's:\n" + "\n".join(strange[:20])
