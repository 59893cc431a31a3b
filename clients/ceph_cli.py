"""The Ceph CLI commands the program runs, as argv lists in the runbook's own words.

Each function returns the argv; :func:`clients.ssh.render` quotes it for the remote shell.
Keeping them here lets the tests check the exact commands and their quoting.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clients.ssh import Executor, Result

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


# -- read-only questions to the monitors, several in one SSH command --------------------------

MON_READS = "ceph-mon-reads"  # the script's first argument: what a command line (or an SSH fault rule) shows


def mon_command(argv: list[str]) -> str:
    """The monitor command (JSON) a read-only `ceph` CLI call of this module sends: the words
    the CLI turns into it (ceph's MonCommands.h: prefix, then the named arguments)."""
    match argv:
        case ["ceph", "osd", "pool", "ls", "detail", "-f", "json"]:
            command = {"prefix": "osd pool ls", "detail": "detail", "format": "json"}
        case ["ceph", "auth", "get", entity, "-f", "json"]:
            command = {"prefix": "auth get", "entity": entity, "format": "json"}
        case ["ceph", "config", "get", who, key]:
            command = {"prefix": "config get", "who": who, "key": key}
        case ["ceph", "config-key", "get", key]:
            command = {"prefix": "config-key get", "key": key}
        case _:
            raise ValueError(f"not a read-only ceph command this program asks the monitors: {argv}")
    return json.dumps(command, sort_keys=True)


def command_name(argv: list[str]) -> str:
    """A command as messages name it: its first four words (`ceph osd pool create`); the monitor
    read script by the `ceph` commands it asks (`ceph osd pool ls`), not by its JSON."""
    if argv[-2:-1] == ["--id"]:
        argv = argv[:-2]  # the cephx id the executor added (ssh.as_ceph_id)
    if argv[:3] == ["python3", "-", MON_READS]:
        prefixes = []
        for command in argv[3:]:
            try:
                prefixes.append(f"ceph {json.loads(command)['prefix']}")
            except (ValueError, TypeError, KeyError):
                prefixes.append(command[:40])
        return ", ".join(prefixes)
    return " ".join(argv[:4])


def mon_reads_script() -> str:
    return resources.files("components.scripts").joinpath("ceph_mon_reads.py").read_text(encoding="utf-8")


def mon_reads(executor: Executor, reads: list[list[str]], *, fresh: bool = False) -> list[Result]:
    """READS (read-only `ceph` CLI calls, from this module) answered in one SSH command, each as the
    CLI would have answered it: its exit status (errno), stdout, and ``Error ENOENT: ...`` on stderr.

    A librados script on the admin node asks them all (components/scripts/ceph_mon_reads.py).
    ``fresh=False``: an answer already given in this run will do (the run memo); writes forget it.
    When the command fails, or prints something other than the script's answers, each read gets
    that same result, so each caller reports it naming its own command as before (garbage stays
    garbage: never "the pool is gone").
    """
    from clients.ssh import Result

    result = executor.read(["python3", "-", MON_READS, *(mon_command(argv) for argv in reads)], stdin=mon_reads_script(), fresh=fresh)
    if result.exit_status != 0:
        return [result] * len(reads)
    try:
        answers = json.loads(result.stdout)
        parsed = [(int(a["ret"]), str(a["out"]), str(a["err"])) for a in answers]
    except (ValueError, TypeError, KeyError):
        parsed = []
    if len(parsed) != len(reads):
        return [Result(0, result.stdout, result.stderr)] * len(reads)
    return [Result(-ret, out, f"Error {errno.errorcode.get(-ret, str(-ret))}: {err}") if ret else Result(0, out, err) for ret, out, err in parsed]
