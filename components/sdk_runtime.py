"""Two costs of the Pulumi Python SDK's runtime that grow with the VMs, taken out of the program's
run (issue #22). Both are set once, by ``__main__.py``, before the first resource; neither changes
what the program registers, nor what the engine does with it.

**The SDK's own debug lines stay in the program unless asked for.** The SDK sends a debug message
to the engine for every step of every resource it registers (``pulumi/runtime/resource.py``:
preparing, registering, registered; ``pulumi/runtime/rpc.py``: one for each input property whose
name it translates), each a blocking ``Log`` call that the engine turns into an event for the
display and the event log, and drops there unless the run has ``--debug``. Nothing tells the
program whether it has (the language host's ``RunRequest`` does not carry it), so the lines cost
the same in every run. The program sends none of its own, and the engine and the plugins keep
theirs: ``--debug`` and ``-v=9 --logflow`` still show every API call and every engine step. Set
``PVECEPHHA_SDK_DEBUG=1`` to have the SDK's lines as well.

**The outputs are awaited together before the SDK's own wait.** At the end of a run the SDK
awaits every output still pending (``pulumi/runtime/stack.py`` ``wait_for_rpcs``) with
``asyncio.wait(..., return_when=FIRST_COMPLETED)`` in a loop: each pass hooks a callback on every
pending output and unhooks it again to learn of one completion (CPython's open
python/cpython#74741, "asyncio.wait very slow with FIRST_COMPLETED"), which is quadratic in the
outputs. Each VM brings about 80 (one per property of ``VmLegacy`` and ``Haresource``): at 30
VMs, 186 passes over 242,000 pending outputs in all. ``settle_outputs_first`` waits for the same
outputs in passes that end at the first failure or when all are done, then hands over to the
SDK's wait, which finds them settled and surfaces any failure exactly as before.

Measured on 2 cores on 2026-12-07, a no-op preview of 30 VMs: the debug lines 0.2 s (0.1 s at 1
VM), the outputs' wait 0.3 s.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi.runtime.stack as sdk_stack
from pulumi.runtime.settings import SETTINGS

ASK_DEBUG = "PVECEPHHA_SDK_DEBUG"


def _not_sent(msg: str, resource: Any = None, stream_id: int | None = None, ephemeral: bool | None = None) -> None:
    """``pulumi.log.debug``'s signature; the message is not sent."""


def keep_sdk_debug_local(environ: Mapping[str, str] = os.environ) -> None:
    """Unless ``PVECEPHHA_SDK_DEBUG=1``, the SDK's debug messages are not sent to the engine."""
    if environ.get(ASK_DEBUG) != "1":
        pulumi.log.debug = _not_sent


def _failed(task: asyncio.Future[Any]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


async def settle_outputs() -> None:
    """Wait until every output the SDK tracks is done, or one has failed (then the SDK's own wait
    raises it): one callback per output and pass, where ``FIRST_COMPLETED`` hooks them all again
    after each completion. New outputs made meanwhile (an ``apply`` that makes more) are the
    next pass's."""
    while True:
        with SETTINGS.lock:
            tracked = list(SETTINGS.outputs)
        if any(_failed(task) for task in tracked):
            return
        pending = [task for task in tracked if not task.done()]
        if not pending:
            return
        await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)


def settle_outputs_first() -> None:
    """The SDK's end-of-run wait (``pulumi.runtime.stack.wait_for_rpcs``) runs after ``settle_outputs``."""
    wait = sdk_stack.wait_for_rpcs
    if getattr(wait, "settles_outputs_first", False):
        return

    async def wait_for_rpcs(await_all_outstanding_tasks: bool = True) -> None:
        if await_all_outstanding_tasks:
            await settle_outputs()
        await wait(await_all_outstanding_tasks)

    wait_for_rpcs.settles_outputs_first = True  # type: ignore[attr-defined]
    sdk_stack.wait_for_rpcs = wait_for_rpcs


def tune(environ: Mapping[str, str] = os.environ) -> None:
    """Both, as ``__main__.py`` sets them."""
    keep_sdk_debug_local(environ)
    settle_outputs_first()
