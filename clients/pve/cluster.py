"""/cluster: the cluster's members and quorum, and where each guest runs."""

from __future__ import annotations

from typing import Any

from clients.pve import Get, Query


def status(get: Get) -> list[dict[str, Any]]:
    """GET /cluster/status: one entry of ``type`` ``cluster`` (``quorate``) and one per member of
    ``type`` ``node`` (``name``, ``online``, ``ip``), as ``pvecm status`` sees them."""
    return get("cluster/status")


def resources(get: Get) -> list[dict[str, Any]]:
    """GET /cluster/resources: every resource of the cluster; callers read the ``type`` ``node`` entries
    (``node``, ``status`` online) and the ``qemu`` ones (``vmid``, ``node`` it runs on, ``status`` running)."""
    return get("cluster/resources")


def resources_of_type(get: Query, kind: str) -> list[dict[str, Any]]:
    """GET /cluster/resources?type=KIND (``vm``, ``storage``, ``node``, ``sdn``): :func:`resources`, only those."""
    return get("cluster/resources", type=kind)


def options(get: Get) -> dict[str, Any]:
    """GET /cluster/options: datacenter.cfg, its property strings as objects: ``ha``
    (``{"shutdown_policy": ...}``), ``crs`` (``{"ha": "basic|static", "ha-rebalance-on-start": 0|1}``).
    Without Sys.Audit on / PVE answers only ``console`` and ``tag-style``."""
    return get("cluster/options") or {}
