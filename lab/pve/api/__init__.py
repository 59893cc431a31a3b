"""The lab's PVE API, one module per subtree of PVE's API tree (each a mixin of app.LabPve that
extends or overrides fakepve's handlers for that subtree, naming the PVE source it follows):

    /access/...                 access.py             pve-access-control src/PVE/API2/{AccessControl,ACL,Role,User}.pm,
                                                      and the permission model (AccessControl.pm, RPCEnvironment.pm)
    /version                    version.py            pve-manager PVE/API2.pm
    /cluster/status             cluster_status.py     pve-manager PVE/API2/Cluster.pm
    /cluster/resources          cluster_resources.py  pve-manager PVE/API2/Cluster.pm
    /cluster/ha/...             cluster_ha.py         pve-ha-manager src/PVE/API2/HA/*.pm
    /nodes/{node}/qemu/...      nodes_qemu.py         qemu-server src/PVE/API2/Qemu.pm
      .../clone, .../template   nodes_qemu_clone.py   qemu-server Qemu.pm clone_vm, template; pve-storage RBDPlugin.pm
    /nodes/{node}/storage/...   nodes_storage.py      pve-storage src/PVE/API2/Storage/{Status,Content}.pm
    /nodes/{node}/tasks/...     tasks.py              pve-manager PVE/API2/Tasks.pm (fakepve's routes)
    /storage                    storage.py            pve-storage src/PVE/API2/Storage/Config.pm

Paths, 501s and the call log are the router's (../router.py). API modules import the model
(../ha/, ../rbdstore.py) and tasks.py, never the app or each other otherwise.
"""
