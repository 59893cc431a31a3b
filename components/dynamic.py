"""What the project's dynamic providers share: their connections, the run's memo, and the checks' timing.

The errors they raise are components/errors.py; how the SDK's provider server reports them,
components/provider_server.py (installed here when this process is that server).

Connection details (SSH key, API token) reach the providers as secret *inputs*, never through
the provider object, which Pulumi pickles into the state.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from clients.ssh import MEMO, Connection, Executor, SshExecutor
from components import provider_server

_server = provider_server.server_module()
if _server is not None:
    provider_server.install(_server)
    MEMO.enabled = True  # the process lives for one engine run: read-only answers are kept for it (RunMemo)
    provider_server.widen_server_pool()


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

    def executor(self, props: Mapping[str, Any]) -> Executor:
        return self.executor_for(props["connection"])

    def executor_for(self, connection: dict[str, Any]) -> Executor:
        """The executor for one secret connection input (a resource that reaches several hosts has one per host)."""
        factory = self._executor_factory or ssh_executor
        return factory(Connection.from_props(connection))


def connection_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a resource's SSH connection input moved to another host, port or user (its key and
    known hosts are secrets a diff does not compare)."""
    old_conn, new_conn = old.get("connection") or {}, new.get("connection") or {}
    return any(old_conn.get(k) != new_conn.get(k) for k in ("host", "port", "user"))


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


def whole_numbers(props: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """PROPS with each of KEYS that came as a float made an int: Pulumi hands a dynamic provider
    every number as a float, and ``32.0`` must reach Ceph as ``32``."""
    return {**props, **{key: int(props[key]) for key in keys if isinstance(props.get(key), float)}}
