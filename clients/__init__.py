"""The clients: how the program, verify, the drill and the lab's tests talk to what they manage.

Laid out by what they reach (as bpg lays out ``proxmox/cluster/ha/resources/``):

- :mod:`clients.pve`: the Proxmox VE API by its paths: the connection and its errors
  (``api``), ``cluster_ha`` (HA service ids), ``nodes_qemu`` (a VM config's drives and volumes);
- :mod:`clients.ssh`: SSH sessions to the nodes and the Ceph admin node (one kept per host a run);
- :mod:`clients.ceph_cli`: the Ceph commands and the librados read script, and their answers;
- :mod:`clients.stack`: a Pulumi stack's outputs, config and secrets, read through the CLI.

Nothing here imports the program's components, the Pulumi SDK or a provider SDK.
"""
