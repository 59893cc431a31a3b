"""Node maintenance as a command, `python -m maintain`: PVE's HA maintenance mode, one node or every node in turn,
with the checks that the cluster can take the node's VMs. Like the drill, it talks to PVE only through its API and SSH."""
