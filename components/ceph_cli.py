"""The Ceph CLI commands the program runs, as argv lists in the runbook's own words.

Each function returns the argv; :func:`components.ssh.render` quotes it for the remote shell.
Keeping them here lets the tests check the exact commands and their quoting.
"""

from __future__ import annotations

from dataclasses import dataclass

ENOENT = 2  # the ceph CLI's exit status for a pool or entity that does not exist


@dataclass(frozen=True)
class Caps:
    mon: str
    osd: str

    @classmethod
    def for_profile(cls, profile: str, pool: str) -> Caps:
        """``profile-rbd`` (least privilege, can blocklist a dead client) or the runbook's caps."""
        if profile == "runbook":
            return cls(mon="allow r", osd=f"allow rwx pool={pool}")
        return cls(mon="profile rbd", osd=f"profile rbd pool={pool}")

    def as_dict(self) -> dict[str, str]:
        return {"mon": self.mon, "osd": self.osd}


def normalise_caps(caps: dict[str, str]) -> dict[str, str]:
    return {k: " ".join(str(v).split()) for k, v in sorted(caps.items())}


def pool_list_detail() -> list[str]:
    """Every pool with its size, pg_num_target, autoscale mode and applications, in one call."""
    return ["ceph", "osd", "pool", "ls", "detail", "-f", "json"]


def pool_create(name: str, pg_num: int) -> list[str]:
    # runbook 1-2: ceph osd pool create rbd-pool 256 (the autoscale mode is set right after)
    return ["ceph", "osd", "pool", "create", name, str(pg_num), str(pg_num), "replicated"]


def pool_set(name: str, key: str, value: str | int) -> list[str]:
    argv = ["ceph", "osd", "pool", "set", name, key, str(value)]
    if key == "size" and str(value) == "1":
        argv.append("--yes-i-really-mean-it")
    return argv


def rbd_pool_init(name: str) -> list[str]:
    # runbook 1-3: rbd pool init rbd-pool
    return ["rbd", "pool", "init", name]


def rbd_ls(name: str) -> list[str]:
    # runbook 3-2: rbd ls rbd-pool
    return ["rbd", "ls", "-p", name, "--format", "json"]


def pool_delete(name: str) -> list[str]:
    return ["ceph", "osd", "pool", "delete", name, name, "--yes-i-really-really-mean-it"]


def auth_get(client: str) -> list[str]:
    return ["ceph", "auth", "get", f"client.{client}", "-f", "json"]


def auth_get_or_create(client: str, caps: Caps) -> list[str]:
    # runbook 2-1: ceph auth get-or-create client.proxmox mon '...' osd '...'
    return ["ceph", "auth", "get-or-create", f"client.{client}", "mon", caps.mon, "osd", caps.osd, "-f", "json"]


def auth_caps(client: str, caps: Caps) -> list[str]:
    return ["ceph", "auth", "caps", f"client.{client}", "mon", caps.mon, "osd", caps.osd]


def auth_del(client: str) -> list[str]:
    return ["ceph", "auth", "del", f"client.{client}"]


def config_set(who: str, key: str, value: str | int) -> list[str]:
    return ["ceph", "config", "set", who, key, str(value)]


def config_rm(who: str, key: str) -> list[str]:
    return ["ceph", "config", "rm", who, key]


def config_get(who: str, key: str) -> list[str]:
    # runbook 8: ceph config get osd osd_scrub_begin_hour (prints the value, or the default when unset)
    return ["ceph", "config", "get", who, key]


def config_key_get(key: str) -> list[str]:
    # the monitors' key/value store; exit 2 (ENOENT) when the key is not set
    return ["ceph", "config-key", "get", key]


def config_key_set(key: str, value: str) -> list[str]:
    return ["ceph", "config-key", "set", key, value]


def config_key_rm(key: str) -> list[str]:
    return ["ceph", "config-key", "rm", key]
