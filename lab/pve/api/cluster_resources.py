"""/cluster/resources: fakepve's answer (pve-manager PVE/API2/Cluster.pm `resources`: one entry per
VM, node and storage per node), kept current by the lab:

- a VM's `node` is where its config lives now: after an HA recovery the HA manager moved it
  (steal_service, ha/crm.py, vmproc.py lab_steal_vm), so every read sees the node the HA manager put
  it on -- bpg's provider re-reads a VM's node from here on every read (proxmox/cluster
  GetVMNodeName) and must follow a failover;
- `hastate` for HA-managed VMs (the HA manager's verbose state);
- RBD storages' status, refreshed from the real Ceph in the background when stale.
"""

from __future__ import annotations


class ClusterResourcesApi:
    """Mixin of LabPve: GET /cluster/resources."""

    async def _resources(self, request):
        for name, store in self.storages.items():
            if store.get("type") == "rbd" and self.ceph_access.stale(name):
                self.background(self._rbd_status(name))
        return await super()._resources(request)
