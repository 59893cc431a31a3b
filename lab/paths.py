"""Where the local lab keeps its state: everything under `.lab/` at the repository root."""

from __future__ import annotations

import os
from pathlib import Path

LAB_PKG = Path(__file__).resolve().parent
ROOT = LAB_PKG.parent
STATE = Path(os.environ.get("LAB_STATE_DIR") or ROOT / ".lab").resolve()

LAB_JSON = STATE / "lab.json"
PIDS = STATE / "pids"
LOGS = STATE / "logs"

DISPATCH = LAB_PKG / "dispatch"
PVE_SHIMS = LAB_PKG / "pve" / "shims"

CEPH = STATE / "ceph"
CEPH_CONF = CEPH / "ceph.conf"
CEPH_ADMIN_KEYRING = CEPH / "ceph.client.admin.keyring"
CEPH_MON_KEYRING = CEPH / "ceph.mon.keyring"
CEPH_MONMAP = CEPH / "monmap"
CEPH_RUN = CEPH / "run"
CEPH_LOG = CEPH / "log"
CEPH_CRASH = CEPH / "crash"

SSH = STATE / "ssh"
SSH_CLIENT_KEY = SSH / "id_ed25519"
SSH_AUTHORIZED_KEYS = SSH / "authorized_keys"
SSH_KNOWN_HOSTS = SSH / "known_hosts"
# root's home on every lab node: Debian's default dotfiles, not the build machine's (lab/sshd.py)
SSH_ROOT_HOME = SSH / "root-home"

# Per-PVE-node client state (the node's CEPH_CONF lives here).
NODES = STATE / "nodes"


def pid_file(name: str) -> Path:
    return PIDS / f"{name}.pid"


def node_dir(node: str) -> Path:
    return NODES / node


def node_ceph_conf(node: str) -> Path:
    return node_dir(node) / "ceph.conf"
