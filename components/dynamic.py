"""What the project's dynamic providers share: clean operator errors and their connections.

Pulumi runs a Python dynamic provider in its own process (``python -m pulumi.dynamic``) and
reports any exception from it with the full Python traceback. An operator who forgot to set an
adoption switch should read one sentence, not a stack: :class:`OperatorError` is reported as its
message alone. Any other exception still carries its traceback, since that is a bug of ours.

A create that fails after it has asked Ceph or PVE to make something raises
:class:`PartiallyCreated`: the engine is told, as Pulumi's own providers tell it, that the object
was created but failed to initialise (``ErrorResourceInitFailed``). The engine then records the
object in the state with the reason, nothing is orphaned, and the next ``pulumi up`` refreshes it
and finishes the job instead of finding an object "this stack did not create".

Connection details (SSH key, API token) reach the providers as secret *inputs*, never through
the provider object, which Pulumi pickles into the state.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent import futures
from types import ModuleType
from typing import Any

from components.ssh import MEMO, Connection, Executor, SshExecutor


class OperatorError(Exception):
    """An expected failure an operator can act on; its message says what and how to fix it."""


class PartiallyCreated(OperatorError):
    """Create failed after the object was (or may have been) made: the state must still record it.

    ``outs`` are the properties to record (the resource's inputs at least, so that refresh and
    update can reach the object); the engine marks the secret ones as it does for a normal create.
    """

    def __init__(self, message: str, what: str, id_: str, outs: dict[str, Any]) -> None:
        super().__init__(f"{message.rstrip('.')}. The {what} is recorded in the state; the next `pulumi up` checks it and finishes it")
        self.id_ = id_
        self.outs = outs


def init_failed_status(error: PartiallyCreated) -> bytes:
    """The gRPC status details that tell the engine "created, but failed to initialise"."""
    import asyncio

    import grpc
    from google.protobuf import any_pb2
    from google.rpc import status_pb2
    from pulumi.runtime import rpc
    from pulumi.runtime.proto import provider_pb2

    loop = asyncio.new_event_loop()
    try:
        properties = loop.run_until_complete(rpc.serialize_properties(error.outs, {}))
    finally:
        loop.close()
    detail = any_pb2.Any()
    detail.Pack(provider_pb2.ErrorResourceInitFailed(id=error.id_, properties=properties, reasons=[str(error)], refresh_before_update=True))
    code = grpc.StatusCode.UNKNOWN.value[0]
    return status_pb2.Status(code=code, message=str(error), details=[detail]).SerializeToString()


class _Traceback(ModuleType):
    """Stands in for ``traceback`` inside the dynamic provider server: operator errors without frames."""

    def __init__(self) -> None:
        super().__init__("traceback")

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)

    def format_exc(self, limit: int | None = None, chain: bool = True) -> str:
        error = sys.exc_info()[1]
        if isinstance(error, PartiallyCreated):
            # Called by the server's error wrapper, right before ``context.abort(UNKNOWN, <this>)``:
            # the trailing metadata set here travels with that status (what grpc_status does).
            context = sys._getframe(1).f_locals.get("context")
            if context is not None:
                context.set_trailing_metadata((("grpc-status-details-bin", init_failed_status(error)),))
        if isinstance(error, OperatorError):
            return str(error)
        return traceback.format_exc(limit, chain)


def _in_provider_server() -> bool:
    server = sys.modules.get("__main__")
    spec = getattr(server, "__spec__", None)
    return server is not None and spec is not None and spec.name == "pulumi.dynamic.__main__"


# How many calls the provider server takes at once; see widen_server_pool.
SERVER_WORKERS = 32


def widen_server_pool(workers: int = SERVER_WORKERS) -> int:
    """Let the dynamic provider server take WORKERS calls at once instead of 4; the pools widened.

    The SDK's server (pulumi/dynamic/__main__.py ``main``) runs every gRPC call in a
    ``futures.ThreadPoolExecutor(max_workers=4)``, whatever the engine's parallelism. Our reads wait
    on SSH, so a refresh of the stack's 12 dynamic resources ran 4 at a time, and a Diff that takes
    a millisecond queued behind them: 1.5 s of a no-op preview's 2.6 s refresh (issue #22). The pool
    is made before our code is loaded (at the first call, by unpickling a provider), so it is found
    here and its limit raised; the executor spawns the extra threads on demand. If a later SDK makes
    its pool otherwise, nothing is found and nothing changes but the speed
    (tests/unit/test_dynamic_server_pool.py says so).
    """
    widened = 0
    for pool in gc.get_objects():
        if isinstance(pool, futures.ThreadPoolExecutor) and getattr(pool, "_max_workers", workers) < workers:
            pool._max_workers = workers  # read by _adjust_thread_count at each submit
            widened += 1
    return widened


if _in_provider_server():
    sys.modules["__main__"].traceback = _Traceback()  # type: ignore[attr-defined]
    MEMO.enabled = True  # the process lives for one engine run: read-only answers are kept for it (RunMemo)
    widen_server_pool()


def prefetch(ask: Callable[[], Any]) -> None:
    """Start ASK in the background, for its read-only answers to be in the run's memo when asked for.

    A check resource (the health gate, the HA preflight) is read by the refresh that starts every
    preview and up, and evaluated by the program's Check that follows in the same run. Started at
    the Read, its questions run alongside the refresh's other reads instead of after them. What it
    finds is not a verdict: a failure is forgotten here (refresh, destroy never depend on it) and the
    Check asks again. Off with the memo (tests, operator commands): nothing would keep the answers.
    """
    if not MEMO.enabled:
        return

    def run() -> None:
        with contextlib.suppress(Exception):  # not a verdict: the Check asks again and reports
            ask()

    threading.Thread(target=run, name="prefetch", daemon=True).start()


ExecutorFactory = Callable[[Connection], Executor]


def ssh_executor(connection: Connection) -> Executor:
    return SshExecutor(connection)


class SshBacked:
    """Mixin for providers that act over SSH: the executor comes from the resource's secret ``connection`` input."""

    def __init__(self, executor_factory: ExecutorFactory | None = None) -> None:
        # A test passes a recording executor; in Pulumi the default builds a real SSH session.
        self._executor_factory = executor_factory

    def executor(self, props: dict[str, Any]) -> Executor:
        return self.executor_for(props["connection"])

    def executor_for(self, connection: dict[str, Any]) -> Executor:
        """The executor for one secret connection input (a resource that reaches several hosts has one per host)."""
        factory = self._executor_factory or ssh_executor
        return factory(Connection.from_props(connection))


def has_unknowns(value: Any) -> bool:
    """True when a property (or anything in it) is not known yet, as in a preview before its source exists."""
    from pulumi.runtime import rpc

    if isinstance(value, dict):
        return any(has_unknowns(v) for v in value.values())
    if isinstance(value, list):
        return any(has_unknowns(v) for v in value)
    return bool(value == rpc.UNKNOWN)


def checks_due(news: dict[str, Any]) -> bool:
    """Whether a check resource (the health gate, the HA preflight) runs its check in this Check.

    The engine calls Check for the program's inputs only: in every preview and every up, never in a
    refresh (nor the one that starts `pulumi destroy`). So refresh and destroy never depend on Ceph
    being healthy. (The check used to run in Diff, which the engine (v3.27x) also calls for a
    refresh with the state's inputs as the new ones: it ran there too, twice a run.) A preview of a
    new stack has unknown inputs: the check runs once they are known.
    """
    return not has_unknowns(news)
