"""A recording SSH executor that answers the Ceph CLI commands the providers send.

It checks that every command it is given survives the remote shell's word splitting unchanged
(i.e. it was quoted) and records them, so tests can assert the exact runbook commands. The
real-Ceph tests of the same providers run against the lab (lab/tests, tests/integration).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients import ceph_cli
from clients.ssh import Connection, RemoteError, Result, render

HEALTHY = "health: HEALTH_OK\nmon: 3 daemons, quorum a,b,c\nosd: 3 osds: 3 up, 3 in\nceph health gate: passed; room for pool rbd-pool (96 of 750 PG replicas)\n"
CONFIG_DEFAULTS = {"osd_scrub_begin_hour": "0", "osd_scrub_end_hour": "0"}  # Ceph's: scrub at any hour


def ceph_status(health: str = "HEALTH_OK", checks: dict[str, str] | None = None, pgs: dict[str, int] | None = None, up: int = 3) -> dict[str, Any]:
    """`ceph status -f json` as Ceph words it: ``checks`` maps a check's name to its summary message."""
    return {
        "health": {"status": health, "checks": {name: {"severity": "HEALTH_WARN", "summary": {"message": m}} for name, m in (checks or {}).items()}},
        "monmap": {"num_mons": 3},
        "quorum_names": ["a", "b", "c"],
        "osdmap": {"num_osds": 3, "num_up_osds": up, "num_in_osds": 3},
        "pgmap": {"num_pgs": 32, "pgs_by_state": [{"state_name": s, "count": n} for s, n in (pgs or {"active+clean": 32}).items()]},
    }


# The moment after a node is fenced: its client blocklisted, a new OSD map, one PG re-peering.
PEERING = ceph_status("HEALTH_WARN", {"PG_AVAILABILITY": "Reduced data availability: 1 pg inactive, 1 pg peering"}, {"active+clean": 31, "peering": 1})


def cli_words(command: dict[str, str]) -> list[str]:
    """The `ceph` CLI words of a read-only monitor command (ceph_cli.mon_command backwards)."""
    fmt = ["-f", command["format"]] if "format" in command else []
    match command["prefix"]:
        case "osd pool ls":
            return ["ceph", "osd", "pool", "ls", command["detail"], *fmt]
        case "auth get":
            return ["ceph", "auth", "get", command["entity"], *fmt]
        case "config get":
            return ["ceph", "config", "get", command["who"], command["key"]]
        case "config-key get":
            return ["ceph", "config-key", "get", command["key"]]
    raise AssertionError(f"the fake monitors do not know {command}")


@dataclass
class FakeCeph:
    osds: int = 3
    max_pg_per_osd: int = 250
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[str, list[str]] = field(default_factory=dict)
    config: dict[tuple[str, str], str] = field(default_factory=dict)  # `ceph config set WHO KEY VALUE`
    config_keys: dict[str, str] = field(default_factory=dict)  # `ceph config-key set KEY VALUE`
    gate: Result | list[Result] = field(default_factory=lambda: Result(0, HEALTHY, ""))  # what the health gate script answers (in turn)
    status: list[dict[str, Any]] = field(default_factory=lambda: [ceph_status()])  # `ceph status` answers, in turn; the last one stays
    gate_stdin: list[str] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    drop_connection: bool = False
    drop_after: str | None = None  # the connection drops once a command starting with this has taken effect

    def executor(self, connection: Connection) -> FakeCeph:
        return self

    def read(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None, fresh: bool = False) -> Result:
        return self.run(argv, stdin=stdin, timeout=timeout)  # no run memo here: every asking is recorded

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float | None = None) -> Result:
        assert shlex.split(render(argv)) == argv
        if self.drop_connection:
            raise RemoteError(f"SSH to root@127.10.10.101:2222: the connection dropped while running `{argv[0]}`")
        if argv[:3] == ["python3", "-", ceph_cli.MON_READS]:
            return self.mon_reads([json.loads(command) for command in argv[3:]])
        self.commands.append(argv)
        if argv[:2] == ["python3", "-"]:
            self.gate_stdin.append(stdin or "")
        answer = self.answer(argv)
        if self.drop_after is not None and " ".join(argv).startswith(self.drop_after):
            raise RemoteError(f"SSH to root@127.10.10.101:2222: the connection dropped while running `{' '.join(argv[:4])}`")
        return answer

    def mon_reads(self, commands: list[dict[str, str]]) -> Result:
        """The admin node's librados script (components/scripts/ceph_mon_reads.py): each monitor
        command answered as the `ceph` CLI words it stands for are, recorded in those words."""
        answers = []
        for command in commands:
            argv = cli_words(command)
            self.commands.append(argv)
            result = self.answer(argv)
            err = result.stderr.split(": ", 1)[1] if result.exit_status else result.stderr
            answers.append({"ret": -result.exit_status, "out": result.stdout, "err": err})
        return self.ok(answers)

    def ran(self, prefix: str) -> bool:
        return any(" ".join(c).startswith(prefix) for c in self.commands)

    @staticmethod
    def ok(payload: Any = "") -> Result:
        return Result(0, payload if isinstance(payload, str) else json.dumps(payload), "")

    def answer(self, argv: list[str]) -> Result:
        words = [w for w in argv if w not in ("-f", "json", "--format")]
        match words:
            case ["ceph", "osd", "pool", "ls", "detail"]:
                return self.ok(
                    [
                        {
                            "pool_name": n,
                            "size": p["size"],
                            "pg_num": p["pg_num"],
                            "pg_num_target": p["pg_num"],
                            "pg_autoscale_mode": p["pg_autoscale_mode"],
                            "application_metadata": p["apps"],
                        }
                        for n, p in sorted(self.pools.items())
                    ]
                )
            case ["ceph", "osd", "pool", "create", name, pg, _, "replicated"]:
                if name in self.pools:
                    return Result(0, "", f"pool '{name}' already exists")
                used = sum(p["pg_num"] * p["size"] for p in self.pools.values())
                if used + int(pg) * 3 > self.max_pg_per_osd * self.osds:
                    return Result(
                        34,
                        "",
                        f"Error ERANGE: pg_num {pg} size 3 would mean {int(pg) * 3} total pgs, which exceeds max {self.max_pg_per_osd * self.osds} (mon_max_pg_per_osd {self.max_pg_per_osd} * num_in_osds {self.osds})",
                    )
                self.pools[name] = {"pg_num": int(pg), "size": 3, "pg_autoscale_mode": "on", "apps": {}}  # Ceph's default
                return Result(0, "", f"pool '{name}' created")
            case ["ceph", "osd", "pool", "set", name, key, value, *_]:
                self.pools[name]["pg_num" if key == "pg_num" else key] = int(value) if value.isdigit() else value
                return self.ok()
            case ["rbd", "pool", "init", name]:
                self.pools[name]["apps"]["rbd"] = {}
                return self.ok()
            case ["rbd", "ls", "-p", name]:
                return self.ok(self.images.get(name, []))
            case ["ceph", "osd", "pool", "delete", name, _, "--yes-i-really-really-mean-it"]:
                del self.pools[name]
                return self.ok()
            case ["ceph", "auth", "get", entity]:
                if entity not in self.clients:
                    return Result(2, "", f"Error ENOENT: failed to find {entity} in keyring")
                return self.ok([{"entity": entity, **self.clients[entity]}])
            case ["ceph", "auth", "get-or-create", entity, "mon", mon, "osd", osd]:
                self.clients.setdefault(entity, {"key": "AQDfakekeyfakekeyfakekeyfakekeyfakeke==", "caps": {"mon": mon, "osd": osd}})
                return self.ok([{"entity": entity, **self.clients[entity]}])
            case ["ceph", "auth", "caps", entity, "mon", mon, "osd", osd]:
                self.clients[entity]["caps"] = {"mon": mon, "osd": osd}
                return Result(0, "", f"updated caps for {entity}")
            case ["ceph", "auth", "del", entity]:
                if self.clients.pop(entity, None) is None:
                    return Result(2, "", f"Error ENOENT: failed to find {entity}")
                return Result(0, "", "updated")
            case ["ceph", "config", "get", who, key]:
                return self.ok(self.config.get((who, key), CONFIG_DEFAULTS.get(key, "")) + "\n")
            case ["ceph", "config", "set", who, key, value]:
                self.config[(who, key)] = value
                return self.ok()
            case ["ceph", "config", "rm", who, key]:
                self.config.pop((who, key), None)
                return self.ok()
            case ["ceph", "config-key", "get", key]:
                if key not in self.config_keys:  # Ceph 16: exit 2 and this line on stderr
                    return Result(2, "", f"Error ENOENT: error obtaining '{key}': (2) No such file or directory")
                return self.ok(self.config_keys[key])
            case ["ceph", "config-key", "set", key, value]:
                self.config_keys[key] = value
                return Result(0, "", f"set {key}")
            case ["ceph", "config-key", "rm", key]:
                self.config_keys.pop(key, None)
                return Result(0, "", "key deleted")
            case ["ceph", "status"]:
                return self.ok(self.status.pop(0) if len(self.status) > 1 else self.status[0])
            case ["python3", "-", _pool, _pg, _size]:
                if isinstance(self.gate, list):
                    return self.gate.pop(0) if len(self.gate) > 1 else self.gate[0]
                return self.gate
        raise AssertionError(f"the fake Ceph does not know {argv}")


@dataclass
class FakeClock:
    """A clock whose sleeps take no time: they move it on, and are recorded."""

    t: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


# librados as the admin node's python3 has it, answering from a file: monitor command (JSON, keys
# sorted) -> [ret, out]; an unknown command fails as the monitors do (EINVAL).
FAKE_RADOS = """
import json

ANSWERS = json.load(open({answers!r}))


class Rados:
    def __init__(self, conffile=None, **_):
        pass

    def connect(self, timeout=0):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *_):
        pass

    def mon_command(self, command, inbuf):
        ret, out = ANSWERS.get(json.dumps(json.loads(command), sort_keys=True), [-22, ""])
        return ret, out.encode(), "" if ret == 0 else "command not known"
"""


def fake_monitors(tmp_path: Path, answers: dict[str, tuple[int, str]]) -> dict[str, str]:
    """The environment of a script run against fake monitors: ANSWERS maps a monitor command to (ret, out)."""
    (tmp_path / "answers.json").write_text(json.dumps({json.dumps(json.loads(k), sort_keys=True): v for k, v in answers.items()}))
    (tmp_path / "rados.py").write_text(FAKE_RADOS.format(answers=str(tmp_path / "answers.json")))
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
