"""The checks of the pve-ceph-ha policy pack (runbook steps 2-8), kept apart from the pack's entry point."""
