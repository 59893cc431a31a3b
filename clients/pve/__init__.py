"""The Proxmox VE API, by path: ``api`` (the connection through any live node, PVE's error
words), ``cluster_ha`` (/cluster/ha: service ids), ``nodes_qemu`` (/nodes/{node}/qemu: a VM
config's drives and volumes)."""
