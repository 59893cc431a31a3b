"""The lab, brought up once for the integration tests (and left as it was found when done)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import lab


@pytest.fixture(scope="session")
def lab_state() -> Iterator[dict[str, Any]]:
    was_up = lab.paths.LAB_JSON.exists()
    state = lab.up(log=lambda _line: None)
    if "pve" not in state:
        pytest.fail("the lab came up without its PVE API (lab/pve): the integration tests need it")
    yield state
    if not was_up:
        lab.down(log=lambda _line: None)
