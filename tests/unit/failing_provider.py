"""A dynamic provider whose check fails as its input says, for tests/unit/test_provider_server.py.

It lives in a module of its own so that the SDK's provider server can import it when it unpickles
the provider, as it imports components/ceph_pool.py for the pool's: with components.dynamic, which
installs the hook.
"""

from __future__ import annotations

from typing import Any

from pulumi.dynamic import CheckResult, ResourceProvider

import components.dynamic  # noqa: F401  (in the provider server: installs components/provider_server.py's hook)
from components.errors import OperatorError, PartiallyCreated


class Failing(ResourceProvider):
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        if news["error"] == "operator":
            raise OperatorError("pool exists; set adopt.pool")
        if news["error"] == "partial":
            raise PartiallyCreated("storage x is not active on pve-node3", "storage", "x", {"storageId": "x"})
        raise KeyError("a bug of ours")
