"""/storage: the cluster's storage configuration (/etc/pve/storage.cfg)."""

from __future__ import annotations

from typing import Any

from clients.pve import Get


def config(get: Get, storage_id: str) -> dict[str, Any]:
    """GET /storage/{storage}: a storage's config: its ``type`` (``rbd``) and ``shared``, and for RBD the
    ``pool``, ``username`` (the Ceph client) and ``monhost``. PVE answers an error when it is not registered."""
    return get(f"storage/{storage_id}")
