"""The program's two errors an operator reads, and the one way a client's failure becomes one.

Any exception a dynamic provider raises reaches the operator through the engine. An
:class:`OperatorError` is shown as its message alone (components/provider_server.py); anything
else keeps its traceback, since it is a bug of ours. The wording rule (CONTRIBUTING.md, Errors):
what was asked, of what, the client's own words, then the fix; never a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class OperatorError(Exception):
    """An expected failure an operator can act on; its message says what and how to fix it."""


class PartiallyCreated(OperatorError):
    """Create failed after the object was (or may have been) made: the state must still record it.

    The engine is told, as Pulumi's own providers tell it, that the object was created but failed to
    initialise (``ErrorResourceInitFailed``): it records the object with the reason, nothing is
    orphaned, and the next ``pulumi up`` refreshes it and finishes the job instead of finding an
    object "this stack did not create". ``outs`` are the properties to record (the resource's inputs
    at least, so that refresh and update can reach the object).
    """

    def __init__(self, message: str, what: str, id_: str, outs: Mapping[str, Any]) -> None:
        super().__init__(f"{message.rstrip('.')}. The {what} is recorded in the state; the next `pulumi up` checks it and finishes it")
        self.id_ = id_
        self.outs = dict(outs)


def failed(action: str, why: object, fix: str = "") -> OperatorError:
    """The operator's message for a failed call: ``ACTION: WHY[; FIX]``, e.g.
    ``failed("GET /storage/ceph-rbd", reason(exc), "check proxmox.endpoint")``. Raise it ``from None``:
    the client's exception chain is the library's, not the operator's."""
    text = f"{action}: {str(why).strip() or type(why).__name__}"
    return OperatorError(f"{text}; {fix}" if fix else text)
