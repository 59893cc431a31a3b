"""pve-ceph-ha: Proxmox VE VMs on external Ceph RBD, highly available, as one Pulumi program.

Nothing here does I/O at import time; ``components.stack.PveCephHa`` is the top component.
"""
