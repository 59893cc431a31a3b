"""/cluster/ha: what the program, verify and the drill share of PVE's HA resources."""

from __future__ import annotations


def sid(vmid: int) -> str:
    """A VM's HA service id, as ``ha-manager`` and /cluster/ha/resources name it: ``vm:101``."""
    return f"vm:{vmid}"
