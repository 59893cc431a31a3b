"""What the project's dynamic providers share: clean operator errors and their connections.

Pulumi runs a Python dynamic provider in its own process (``python -m pulumi.dynamic``) and
reports any exception from it with the full Python traceback. An operator who forgot to set an
adoption switch should read one sentence, not a stack: :class:`OperatorError` is reported as its
message alone. Any other exception still carries its traceback, since that is a bug of ours.

Connection details (SSH key, API token) reach the providers as secret *inputs*, never through
the provider object, which Pulumi pickles into the state.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

from components.ssh import Connection, Executor, SshExecutor


class OperatorError(Exception):
    """An expected failure an operator can act on; its message says what and how to fix it."""


class _Traceback(ModuleType):
    """Stands in for ``traceback`` inside the dynamic provider server: operator errors without frames."""

    def __init__(self) -> None:
        super().__init__("traceback")

    def __getattr__(self, name: str) -> Any:
        return getattr(traceback, name)

    def format_exc(self, limit: int | None = None, chain: bool = True) -> str:
        error = sys.exc_info()[1]
        if isinstance(error, OperatorError):
            return str(error)
        return traceback.format_exc(limit, chain)


def _install_clean_errors() -> None:
    server = sys.modules.get("__main__")
    spec = getattr(server, "__spec__", None)
    if server is not None and spec is not None and spec.name == "pulumi.dynamic.__main__":
        server.traceback = _Traceback()  # type: ignore[attr-defined]


_install_clean_errors()

ExecutorFactory = Callable[[Connection], Executor]


def ssh_executor(connection: Connection) -> Executor:
    return SshExecutor(connection)


class SshBacked:
    """Mixin for providers that act over SSH: the executor comes from the resource's secret ``connection`` input."""

    def __init__(self, executor_factory: ExecutorFactory | None = None) -> None:
        # A test passes a recording executor; in Pulumi the default builds a real SSH session.
        self._executor_factory = executor_factory

    def executor(self, props: dict[str, Any]) -> Executor:
        factory = self._executor_factory or ssh_executor
        return factory(Connection.from_props(props["connection"]))
