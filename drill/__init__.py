"""The failover drill: runbook step 7 (HA failure test) as a command, `python -m drill`.

It talks to Proxmox VE only through its API and SSH (and, with ``--method lab``, to the lab's
fault control channel over HTTP), so the same command runs against a real cluster and the lab.
"""
