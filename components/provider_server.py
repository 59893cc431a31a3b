"""Our hooks into the SDK's dynamic provider server (``python -m pulumi.dynamic``).

Pulumi runs the Python dynamic providers in a server of its own, which wraps every call in
``_abort_with_traceback`` (pulumi/dynamic/__main__.py)::

    except Exception:
        context.abort(grpc.StatusCode.UNKNOWN, traceback.format_exc())

so the engine shows any failure as a Python traceback. Two hooks change what it reports, both
through the name ``traceback`` that wrapper looks up in its module when a call fails:

- an :class:`~components.errors.OperatorError` is reported as its message alone;
- a :class:`~components.errors.PartiallyCreated` also sets the gRPC status details that tell the
  engine "created, but failed to initialise" (the wrapper's ``context``, one frame up).

The hook is installed when the server loads our code: at its first call, whose own failure is
then reported the same way. It reaches into the SDK's private module, so
tests/unit/test_provider_server.py drives that server's own ``Check`` through the path: an SDK
upgrade that changes it fails the unit suite, not an operator's run.

The server also runs its calls in a pool of 4 threads: :func:`widen_server_pool`.
"""

from __future__ import annotations

import gc
import sys
import traceback
from concurrent import futures
from types import ModuleType
from typing import Any

from components.errors import OperatorError, PartiallyCreated

SERVER_MODULE = "pulumi.dynamic.__main__"


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


class OperatorTraceback(ModuleType):
    """Stands in for ``traceback`` inside the provider server: operator errors without frames."""

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


def server_module() -> ModuleType | None:
    """The provider server's module when this process is that server (it runs as ``__main__``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return main if main is not None and spec is not None and spec.name == SERVER_MODULE else None


def install(server: ModuleType) -> None:
    """Report operator errors through SERVER's error wrapper as their message (see the module's doc)."""
    server.traceback = OperatorTraceback()  # type: ignore[attr-defined]


# How many calls the provider server takes at once; see widen_server_pool.
SERVER_WORKERS = 32


def widen_server_pool(workers: int = SERVER_WORKERS) -> int:
    """Let the dynamic provider server take WORKERS calls at once instead of 4; the pools widened.

    The SDK's server (pulumi/dynamic/__main__.py ``main``) runs every gRPC call in a
    ``futures.ThreadPoolExecutor(max_workers=4)``, whatever the engine's parallelism. Our reads wait
    on SSH, so a refresh of the stack's 12 dynamic resources ran 4 at a time, and a Diff that takes
    a millisecond queued behind them: 1.5 s of a no-op preview's 2.6 s refresh (issue #22). The pool
    is made before our code is loaded (at the first call, by unpickling a provider), so it is found
    here and its limit raised. The executor spawns a thread at each submit, which takes the oldest
    call waiting: the calls that queued behind the first 4 (a refresh sends its 8 first reads at
    once) would each take a later call's thread, and that later call (a Diff of a millisecond, which
    the refresh of every resource depending on it waits for) would wait for a read to end: 0.45 s of
    a no-op preview's refresh (measured 2026-12-07). So a thread is started here for each call
    already waiting. If a later SDK makes its pool otherwise, nothing is found and nothing changes
    but the speed (tests/unit/test_dynamic_server_pool.py says so).
    """
    widened = 0
    for pool in gc.get_objects():
        if isinstance(pool, futures.ThreadPoolExecutor) and getattr(pool, "_max_workers", workers) < workers:
            pool._max_workers = workers  # read by _adjust_thread_count at each submit
            for _ in range(pool._work_queue.qsize()):
                pool._adjust_thread_count()  # type: ignore[attr-defined]  # a thread for each call already waiting
            widened += 1
    return widened
