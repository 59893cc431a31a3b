"""/cluster/ha: what the program, verify and the drill share of PVE's HA resources and its HA manager."""

from __future__ import annotations

from typing import Any

from clients.pve import Get


def sid(vmid: int) -> str:
    """A VM's HA service id, as ``ha-manager`` and /cluster/ha/resources name it: ``vm:101``."""
    return f"vm:{vmid}"


def resources(get: Get) -> list[dict[str, Any]]:
    """GET /cluster/ha/resources: one entry per HA resource, its ``sid`` (``vm:101``), requested ``state``,
    ``max_restart`` and ``max_relocate``."""
    return get("cluster/ha/resources")


def rules(get: Get) -> list[dict[str, Any]]:
    """GET /cluster/ha/rules (PVE 9): one entry per HA rule, its ``rule``, ``type`` (``node-affinity``,
    ``resource-affinity``), ``resources`` (``vm:101,vm:102``), ``affinity`` (``positive``,
    ``negative``), and ``errors`` (``{"resources": "..."}``) when the HA manager drops it as infeasible."""
    return get("cluster/ha/rules")


def status_current(get: Get) -> list[dict[str, Any]]:
    """GET /cluster/ha/status/current: what ``ha-manager status`` prints, one entry per line: ``type``
    ``quorum`` (``quorate``), ``master`` (``node``), ``lrm`` and ``service`` (``sid``, ``node``, ``state``,
    ``crm_state``, ``status``)."""
    return get("cluster/ha/status/current")


def manager_status(get: Get) -> dict[str, Any]:
    """GET /cluster/ha/status/manager_status: the HA manager's own state (``manager_status``:
    ``master_node``, ``node_status``, ``service_status``), ``{}`` when PVE answers none."""
    return get("cluster/ha/status/manager_status") or {}


def node_states(get: Get) -> dict[str, str]:
    """The HA manager's view of each node, ``{node: online | unknown | fence | gone}``: the
    ``manager_status.node_status`` of :func:`manager_status`."""
    return dict((manager_status(get).get("manager_status") or {}).get("node_status") or {})
