"""The runbook's own checks, run against the lab after `pulumi up`, printed in the runbook's words.

    python tools/runbook_checks.py [--pool rbd-pool] [--storage ceph-rbd] [--vm 101 ...]

1-1 `ceph -s` (HEALTH_OK, OSDs up/in, quorum) · 3-2 `rbd ls rbd-pool` (vm-101-disk-0) ·
2-3 storage Status = Active on every node · 4-2/5 `ha-manager status` (quorum OK, master,
vm:101 started). Exits 1 at the first check that fails, saying which.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class CheckFailed(Exception):
    pass


@dataclass
class Lab:
    state: dict[str, Any]

    @classmethod
    def load(cls) -> Lab:
        path = ROOT / ".lab" / "lab.json"
        if not path.exists():
            raise CheckFailed("the lab is not up (no .lab/lab.json): run `make lab-up`")
        return cls(json.loads(path.read_text()))

    def ssh(self, role: str, command: str) -> str:
        ssh = self.state["ssh"]
        argv = [
            "ssh", "-p", str(ssh["port"]), "-i", ssh["private_key_path"],
            "-o", f"UserKnownHostsFile={ssh['known_hosts']}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            f"{ssh['user']}@{ssh['hosts'][role]}", command,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise CheckFailed(f"`{command}` on {role} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
        return done.stdout

    def api(self) -> Any:
        from proxmoxer import ProxmoxAPI  # type: ignore[import-untyped]

        pve = self.state["pve"]
        user, token = pve["token_id"].split("!")
        host = pve["endpoint"].split("//")[1].split(":")[0]
        return ProxmoxAPI(host, port=8006, user=user, token_name=token, token_value=pve["token_secret"], verify_ssl=pve["ca_file"])


def ceph_health(lab: Lab) -> list[str]:
    status = json.loads(lab.ssh("ceph-admin", "ceph -s -f json"))
    health = status["health"]["status"]
    osd = status["osdmap"].get("osdmap", status["osdmap"])
    lines = [
        f"health: {health}",
        f"mon: {status['monmap']['num_mons']} daemons, quorum {','.join(status['quorum_names'])}",
        f"osd: {osd['num_osds']} osds: {osd['num_up_osds']} up, {osd['num_in_osds']} in",
    ]
    if health != "HEALTH_OK" or osd["num_up_osds"] != osd["num_osds"] or osd["num_in_osds"] != osd["num_osds"]:
        raise CheckFailed("ceph -s: " + "; ".join(lines))
    return lines


def rbd_images(lab: Lab, pool: str, vms: list[int]) -> list[str]:
    images = lab.ssh("ceph-admin", f"rbd ls {pool}").split()
    for vm in vms:
        if f"vm-{vm}-disk-0" not in images:
            raise CheckFailed(f"rbd ls {pool}: no vm-{vm}-disk-0 (found: {', '.join(images) or 'nothing'})")
    return [f"rbd ls {pool}: {' '.join(images)}"]


def storage_active(lab: Lab, storage: str) -> list[str]:
    api = lab.api()
    lines = []
    for node in sorted(lab.state["pve"]["nodes"]):
        status = api.nodes(node).storage(storage).status.get()
        if int(status.get("active", 0)) != 1:
            raise CheckFailed(f"storage {storage} on {node}: Status is not Active")
        lines.append(f"storage {storage} on {node}: Active (shared {status.get('shared', 0)})")
    return lines


def ha_status(lab: Lab, vms: list[int], node: str = "pve-node1") -> list[str]:
    status = lab.ssh(node, "ha-manager status")
    lines = [line for line in status.splitlines() if line.strip()]
    if not any(line.startswith("quorum OK") for line in lines):
        raise CheckFailed(f"ha-manager status on {node}: no `quorum OK`:\n{status}")
    if not any(line.startswith("master ") for line in lines):
        raise CheckFailed(f"ha-manager status on {node}: no master:\n{status}")
    for vm in vms:
        if not any(line.startswith(f"service vm:{vm} (") and line.rstrip().endswith("started)") for line in lines):
            raise CheckFailed(f"ha-manager status on {node}: vm:{vm} is not started:\n{status}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="rbd-pool")
    parser.add_argument("--storage", default="ceph-rbd")
    parser.add_argument("--vm", type=int, action="append", default=None)
    args = parser.parse_args()
    vms = args.vm or [101]
    try:
        lab = Lab.load()
        for title, check in (
            ("1-1 ceph -s", lambda: ceph_health(lab)),
            (f"3-2 rbd ls {args.pool}", lambda: rbd_images(lab, args.pool, vms)),
            (f"2-3 storage {args.storage}", lambda: storage_active(lab, args.storage)),
            ("4-2/5 ha-manager status", lambda: ha_status(lab, vms)),
        ):
            print(f"[check] {title}")
            for line in check():
                print(f"        {line}")
    except CheckFailed as failed:
        print(f"[check] FAILED: {failed}", file=sys.stderr)
        return 1
    print("[check] all runbook checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
