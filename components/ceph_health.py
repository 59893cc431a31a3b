"""Runbook 1-1: ``ceph -s`` must show HEALTH_OK, every OSD up/in and the mon quorum, before Ceph is touched."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pulumi
from pulumi_command import remote

from components.config import PoolSpec


def gate_script() -> str:
    return resources.files("components.scripts").joinpath("ceph_health_gate.py").read_text(encoding="utf-8")


class CephHealthGate(pulumi.ComponentResource):
    """Runs the health gate on the admin node; the deployment stops here with the reasons if Ceph is not healthy.

    It runs when first deployed and again whenever the pool's spec or the monitors change, i.e.
    whenever this stack is about to change something in Ceph.
    """

    report: pulumi.Output[str]

    def __init__(self, name: str, pool: PoolSpec, monitors: list[str], connection: Any, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pveceph:ceph:HealthGate", name, None, opts)
        self.check = remote.Command(
            f"{name}-check",
            connection=connection,
            create=f"python3 - {pool.name} {pool.pg_num} {pool.size}",
            stdin=gate_script(),
            triggers=[pool.name, pool.pg_num, pool.size, *monitors],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.report = self.check.stdout
        self.register_outputs({"report": self.report})
