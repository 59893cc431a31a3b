"""The program's two settings of the SDK's runtime (components/sdk_runtime.py): its debug lines stay
in the program unless PVECEPHHA_SDK_DEBUG=1, and the outputs are awaited together before its own wait."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pulumi
import pulumi.runtime.stack as sdk_stack
import pytest
from pulumi.runtime.settings import SETTINGS

from components import sdk_runtime


class Engine:
    """The engine's Log RPC, recorded."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, str]] = []

    def Log(self, request: Any) -> None:  # the gRPC stub's name
        self.messages.append((request.severity, request.message))


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Engine:
    recorder = Engine()
    monkeypatch.setattr(pulumi.log, "get_engine", lambda: recorder)
    monkeypatch.setattr(pulumi.log, "debug", pulumi.log.debug)  # restored after the test
    return recorder


def test_debug_lines_are_not_sent_and_the_others_are(engine: Engine) -> None:
    sdk_runtime.keep_sdk_debug_local({})
    pulumi.log.debug("resource registration successful: ty=proxmoxve:index/vmLegacy:VmLegacy")
    pulumi.log.info("kept")
    pulumi.log.warn("kept too")
    assert [message for _, message in engine.messages] == ["kept", "kept too"]


def test_asked_for_they_are_sent(engine: Engine) -> None:
    sdk_runtime.keep_sdk_debug_local({sdk_runtime.ASK_DEBUG: "1"})
    pulumi.log.debug("registering resource")
    assert [message for _, message in engine.messages] == ["registering resource"]


@pytest.fixture
def tracked() -> Iterator[set[asyncio.Future[Any]]]:
    """SETTINGS.outputs, as the SDK's outputs fill it, emptied after the test."""
    with SETTINGS.lock:
        SETTINGS.outputs.clear()
    yield SETTINGS.outputs
    with SETTINGS.lock:
        SETTINGS.outputs.clear()


def track(coroutine: Any) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(coroutine)
    with SETTINGS.lock:
        SETTINGS.outputs.add(task)
    return task


async def value_after(seconds: float, value: Any = None) -> Any:
    await asyncio.sleep(seconds)
    return value


async def failing_after(seconds: float) -> None:
    await asyncio.sleep(seconds)
    raise ValueError("the output's resource failed")


def test_settle_outputs_waits_for_every_output_and_those_made_meanwhile(tracked: set[asyncio.Future[Any]]) -> None:
    async def run() -> list[asyncio.Task[Any]]:
        async def makes_another() -> None:
            await asyncio.sleep(0.01)
            made.append(track(value_after(0.02)))

        made = [track(value_after(0.01 * i)) for i in range(50)] + [track(makes_another())]
        await sdk_runtime.settle_outputs()
        return made

    made = asyncio.run(run())
    assert len(made) == 52 and all(task.done() for task in made)


def test_settle_outputs_stops_at_the_first_failure(tracked: set[asyncio.Future[Any]]) -> None:
    async def run() -> tuple[asyncio.Task[Any], asyncio.Task[Any]]:
        failed, slow = track(failing_after(0.01)), track(value_after(5))
        await sdk_runtime.settle_outputs()
        slow.cancel()
        return failed, slow

    failed, slow = asyncio.run(run())
    assert isinstance(failed.exception(), ValueError)
    assert slow.cancelled()  # cancelled by the test: settle_outputs returned without it


def test_the_sdks_wait_runs_after_and_raises_the_failure_as_before(tracked: set[asyncio.Future[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_stack, "wait_for_rpcs", sdk_stack.wait_for_rpcs)  # restored after the test
    original = sdk_stack.wait_for_rpcs
    sdk_runtime.settle_outputs_first()
    sdk_runtime.settle_outputs_first()  # once only
    assert sdk_stack.wait_for_rpcs is not original and getattr(sdk_stack.wait_for_rpcs, "settles_outputs_first", False)

    async def run() -> None:
        track(value_after(0.01))
        track(failing_after(0.02))
        await sdk_stack.wait_for_rpcs()

    with pytest.raises(ValueError, match="the output's resource failed"):
        asyncio.run(run())


def test_tune_sets_both(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_stack, "wait_for_rpcs", sdk_stack.wait_for_rpcs)
    sdk_runtime.tune({})
    pulumi.log.debug("dropped")
    assert engine.messages == [] and getattr(sdk_stack.wait_for_rpcs, "settles_outputs_first", False)
