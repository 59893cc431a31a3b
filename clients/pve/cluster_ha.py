"""/cluster/ha: what the program, verify and the drill share of PVE's HA resources."""

from __future__ import annotations


def sid(vmid: int) -> str:
    """A VM's HA service id, as ``ha-manager`` and /cluster/ha/resources name it: ``vm:101``."""
    return f"vm:{vmid}"


def vmid_of(service: str) -> int | None:
    """The VM id of an HA service id (``vm:101`` -> 101); None for a container or anything else."""
    kind, _, name = service.partition(":")
    return int(name) if kind == "vm" and name.isdigit() else None
