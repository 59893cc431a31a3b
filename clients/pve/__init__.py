"""The Proxmox VE API, by path (one module per path, as PVE's API viewer lays it out:
https://pve.proxmox.com/pve-docs/api-viewer/):

- ``api``: the connection through any live node, PVE's error words;
- ``access``: /access/permissions, the token's effective privileges;
- ``cluster``: /cluster/status (quorum, members) and /cluster/resources (where each VM runs);
- ``cluster_ha``: /cluster/ha: service ids, HA resources, the HA manager's status;
- ``storage``: /storage/{storage}, a storage's config;
- ``nodes_storage``: /nodes/{node}/storage/{storage}/status, whether a node can use a storage;
- ``nodes_qemu``: /nodes/{node}/qemu/{vmid}/config, a VM's config, its drives and volumes.

The read functions take ``get``, whatever GET the caller already has (verify's ``Context.api``,
the drill's ``Pve.get``): it raises the caller's own error, so each caller keeps its messages.
"""

from __future__ import annotations

from typing import Any, Protocol


class Get(Protocol):
    """A GET on the PVE API: ``get("cluster/ha/resources")`` is the answer's ``data``."""

    def __call__(self, path: str) -> Any: ...


class Query(Protocol):
    """A :class:`Get` that also sends query parameters: ``get("cluster/resources", type="vm")``."""

    def __call__(self, path: str, **params: Any) -> Any: ...
