"""lab/testing/steps.py: one test made of named steps runs them in order, gives each the fixtures
its parameters name, and stops at the first failure, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.testing.steps import run_steps


def test_the_steps_run_in_order_each_with_the_fixtures_it_names(tmp_path: Path) -> None:
    ran: list[tuple[str, object]] = []

    def create(stack: str) -> None:
        ran.append(("create", stack))

    def write(stack: str, tmp_path: Path) -> None:
        (tmp_path / "file").write_text(stack)
        ran.append(("write", tmp_path))

    def destroy() -> None:
        ran.append(("destroy", None))

    run_steps([create, write, destroy], stack="s1", tmp_path=tmp_path)
    assert ran == [("create", "s1"), ("write", tmp_path / "write"), ("destroy", None)]
    assert (tmp_path / "write" / "file").read_text() == "s1"  # a folder of its own, named for the step


def test_the_first_failing_step_stops_the_rest_and_is_named() -> None:
    ran: list[str] = []

    def up() -> None:
        ran.append("up")

    def drift_repaired() -> None:
        raise AssertionError("preview shows 1 change")

    def destroy() -> None:
        ran.append("destroy")

    with pytest.raises(AssertionError, match="preview shows 1 change") as failure:
        run_steps([up, drift_repaired, destroy])
    assert ran == ["up"]
    assert failure.value.__notes__ == ["in step 2 of 3: drift_repaired (the steps after it did not run)"]


def test_a_step_wanting_a_fixture_the_test_did_not_pass_is_a_clear_error() -> None:
    def needs(stack: str) -> None:
        raise AssertionError("not reached")

    with pytest.raises(TypeError, match="step needs wants the fixture 'stack'"):
        run_steps([needs])
