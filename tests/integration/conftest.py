"""The lab, brought up once for the integration tests (and left as it was found when done).

Every test here also checks the lab's record of the API calls made during it: the `proxmoxve`
plugin (bpg's Go client, User-Agent Go-http-client) must never have met an answer the lab does
not model (a 501 for a method PVE has) or a fault of the lab itself (a 500 from its own bug).
Such an answer is not what PVE would have said, so whatever the test saw proves nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import lab
import lab.pve

PLUGIN = "Go-http-client"  # the proxmoxve plugin's User-Agent in the lab's call log


@pytest.fixture(autouse=True)
def plugin_met_only_pve_answers(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.time()
    yield
    if "lab_state" not in request.fixturenames and not lab.paths.LAB_JSON.exists():
        return  # a test that never reached the lab
    strange = lab.pve.unmodelled(since=started, agent=PLUGIN)
    assert not strange, "the proxmoxve plugin met answers that are not PVE's:\n" + "\n".join(strange[:20])
