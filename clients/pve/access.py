"""/access: what the API token may do."""

from __future__ import annotations

from typing import Any

from clients.pve import Get


def permissions(get: Get) -> dict[str, dict[str, Any]]:
    """GET /access/permissions: the caller's own effective privileges, ``{ACL path: {privilege: 1 if it
    propagates}}`` (``{"/storage": {"Datastore.Audit": 1}}``); verify compares them with the role the
    program needs (components/pve_rights.py)."""
    return get("access/permissions")
