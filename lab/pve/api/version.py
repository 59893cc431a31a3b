"""/version: pve-manager PVE/API2.pm `version` -- version (the pve-manager package version),
release (x.y) and repoid (the short git revision, 8 to 64 hex digits), by the lab's mode: PVE 9
("rules") or PVE 8 ("groups"). bpg's client reads it (proxmox/version) for feature checks;
`pveversion` on the nodes (the shim) prints the same version and repoid.
"""

from __future__ import annotations

from fakepve.server import ok

# mode -> (version, release, repoid)
VERSIONS = {"rules": ("9.0.10", "9.0", "c3c7c6d5b2a3e4f1"), "groups": ("8.4.1", "8.4", "2a5fa54a8503f96d")}


class VersionApi:
    """Mixin of LabPve: GET /version."""

    async def _version(self, request):
        version, release, repoid = VERSIONS[self.mode]
        return ok({"version": version, "release": release, "repoid": repoid})
