"""/cluster/status: pve-manager PVE/API2/Cluster.pm `status` -- one `cluster` entry (name, nodes,
quorate, version) and one `node` entry per member (nodeid, ip, online, local: 1 for the node
whose address took the call, as each node answers for itself).
"""

from __future__ import annotations

from fakepve.server import ok


class ClusterStatusApi:
    """Mixin of LabPve: GET /cluster/status."""

    async def _cluster_status(self, request):
        local = self.local_node_of(request) or self.node_names[0]
        online = [n for n in self.node_names if self.nodes[n].get("online", True)]
        data = [
            {
                "type": "cluster",
                "id": "cluster",
                "name": self.cluster_name,
                "nodes": len(self.node_names),
                "quorate": 1 if self.quorate else 0,
                "version": len(self.node_names),
            }
        ]
        for idx, name in enumerate(self.node_names, 1):
            data.append(
                {
                    "type": "node",
                    "id": "node/" + name,
                    "name": name,
                    "nodeid": idx,
                    "level": "",
                    "ip": self.node_addr[name],
                    "online": 1 if name in online else 0,
                    "local": 1 if name == local else 0,
                }
            )
        return ok(data)
