"""Runbook 8: scrubs outside business hours (``osd_scrub_begin_hour`` / ``osd_scrub_end_hour``)."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi_command import remote

from components import ceph_cli
from components.config import ScrubWindow
from components.ssh import render


class CephScrubWindow(pulumi.ComponentResource):
    """Sets the OSDs' scrub window; removing it from the config restores Ceph's default (all day)."""

    def __init__(self, name: str, window: ScrubWindow, connection: Any, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pveceph:ceph:ScrubWindow", name, None, opts)
        apply = " && ".join(
            render(argv)
            for argv in (
                ceph_cli.config_set("osd", "osd_scrub_begin_hour", window.begin_hour),
                ceph_cli.config_set("osd", "osd_scrub_end_hour", window.end_hour),
            )
        )
        remove = "; ".join(render(ceph_cli.config_rm("osd", key)) for key in ("osd_scrub_begin_hour", "osd_scrub_end_hour"))
        self.command = remote.Command(
            f"{name}-config",
            connection=connection,
            create=apply,
            update=apply,
            delete=remove,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
