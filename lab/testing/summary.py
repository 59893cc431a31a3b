"""The Automation API's Stack for the tests (:class:`EventSummaryStack`): the summary of up, refresh
and destroy from the engine's own events, the outputs read only when a test looks (issue #22)."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from pulumi import automation as auto


class _Deferred(threading.local):
    on = False


class LazyOutputs(Mapping[str, auto.OutputValue]):
    """A stack's outputs, read (`pulumi stack output`, twice: masked and plain) the first time a test looks."""

    def __init__(self, read: Callable[[], auto.OutputMap]):
        self._read = read
        self._map: auto.OutputMap | None = None

    def _loaded(self) -> auto.OutputMap:
        if self._map is None:
            self._map = self._read()
        return self._map

    def __getitem__(self, key: str) -> auto.OutputValue:
        return self._loaded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


class EventSummaryStack(auto.Stack):
    """The Automation API's Stack, whose up, refresh and destroy take their summary from the engine's
    own event stream, as the SDK's preview does, and read the outputs only when a test looks.

    The SDK runs three more CLI commands after each of them (`stack output` masked and plain, then
    `stack history` for the summary): 0.6-0.9 s an operation, several hundred operations a CI run
    (issue #22). The summary event is the engine's count of each step, which the history records
    too; `result` is "succeeded" because the command exited 0 (a failed one raises CommandError, as
    before). Without a summary event (none should be missing), the history is read as before.
    """

    _deferred = _Deferred()  # per thread: two_ups_at_once runs two operations at once

    def outputs(self) -> auto.OutputMap:
        if self._deferred.on:
            return cast(auto.OutputMap, LazyOutputs(super().outputs))
        return super().outputs()

    def info(self, show_secrets: bool = True) -> auto.UpdateSummary | None:
        if self._deferred.on:
            return _PENDING  # replaced in _summarised, once every event has arrived
        return super().info(show_secrets)

    def _summarised(self, kind: str, operation: Callable[..., Any], **kwargs: Any) -> Any:
        seen: list[auto.SummaryEvent] = []
        user = kwargs.pop("on_event", None)

        def on_event(event: auto.EngineEvent) -> None:
            if event.summary_event is not None:
                seen.append(event.summary_event)
            if user is not None:
                user(event)

        started = datetime.datetime.now()
        self._deferred.on = True
        try:
            result = operation(on_event=on_event, **kwargs)
        finally:
            self._deferred.on = False
        # the SDK has stopped its event server by now: every event it was sent has been handled
        if seen:
            result.summary = auto.UpdateSummary(
                kind=kind, start_time=started, message="", environment={}, config={}, result="succeeded", resource_changes=seen[-1].resource_changes
            )
        else:
            result.summary = super().info()
        return result

    def up(self, **kwargs: Any) -> auto.UpResult:  # type: ignore[override]
        return cast(auto.UpResult, self._summarised("update", super().up, **kwargs))

    def refresh(self, **kwargs: Any) -> auto.RefreshResult:  # type: ignore[override]
        return cast(auto.RefreshResult, self._summarised("refresh", super().refresh, **kwargs))

    def destroy(self, **kwargs: Any) -> auto.DestroyResult:  # type: ignore[override]
        return cast(auto.DestroyResult, self._summarised("destroy", super().destroy, **kwargs))


_PENDING = auto.UpdateSummary(kind="", start_time=datetime.datetime.now(), message="", environment={}, config={}, result="pending")
