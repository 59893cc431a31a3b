"""/nodes/{node}/storage: a storage as one node sees it."""

from __future__ import annotations

from typing import Any

from clients.pve import Get


def status(get: Get, node: str, storage_id: str) -> dict[str, Any]:
    """GET /nodes/{node}/storage/{storage}/status: ``active`` 1 when the node can use the storage (for RBD:
    it reaches the monitors and opens the pool with the storage's key), with ``enabled``, ``shared``, ``type``."""
    return get(f"nodes/{node}/storage/{storage_id}/status")
