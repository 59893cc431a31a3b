"""Runbook 1-1: ``ceph -s`` must show HEALTH_OK, every OSD up/in and the mon quorum, before Ceph is touched.

A check, not a state: the gate script (components/scripts/ceph_health_gate.py) runs on the Ceph
admin node on **every** ``pulumi preview`` and ``pulumi up``, not only when the pool's spec changes.
The engine asks a resource's provider to check its inputs (Check) and, once it exists, to diff
them (Diff) on every run; the gate runs in both (Check only for a gate not yet created, whose
Create runs it again to record the report). A failing gate raises the script's reasons, so the
preview shows them and ``pulumi up`` stops before the pool (which depends on the gate) is
touched. A healthy gate with unchanged inputs reports no change: a healthy, unchanged stack
previews with 0 changes. Refresh does not run it (a check has nothing to read back).

The ``report`` output is the script's output (no secrets) from the gate's last create or update.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import pulumi
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components.config import PoolSpec
from components.dynamic import OperatorError, SshBacked, checks_due, has_unknowns
from components.graph import child_options
from components.ssh import Connection, RemoteError

ID = "ceph-health-gate"
REASON = "ceph health gate: "  # the script's prefix of every problem it found
COMPARED = ("pool", "pgNum", "size", "monitors")


def gate_script() -> str:
    return resources.files("components.scripts").joinpath("ceph_health_gate.py").read_text(encoding="utf-8")


def gate_argv(pool: str, pg_num: int, size: int) -> list[str]:
    """``python3 - POOL PG_NUM SIZE``, with the script on stdin."""
    return ["python3", "-", pool, str(int(pg_num)), str(int(size))]


def verdict(where: str, exit_status: int, stdout: str, stderr: str) -> str:
    """The report of a passed gate; an :class:`OperatorError` with the script's reasons otherwise."""
    if exit_status == 0:
        return stdout
    reasons = [line.removeprefix(REASON) for line in stdout.splitlines() if line.startswith(REASON)]
    if reasons:
        raise OperatorError(f"Ceph health gate (runbook 1-1) on {where}: " + "; ".join(reasons))
    tail = (stderr.strip() or stdout.strip()).splitlines()[-1:] or ["no output"]
    raise OperatorError(
        f"Ceph health gate (runbook 1-1) could not run on {where} (exit {exit_status}): {tail[0][-300:]}; "
        "the admin node needs python3 and the ceph CLI with the admin keyring"
    )


class HealthGateProvider(SshBacked, ResourceProvider):
    def evaluate(self, props: dict[str, Any]) -> str:
        """Run the gate now: its report, or an :class:`OperatorError` saying why Ceph must not be touched."""
        where = Connection.from_props(props["connection"]).where
        try:
            result = self.executor(props).run(gate_argv(props["pool"], props["pgNum"], props["size"]), stdin=gate_script())
        except RemoteError as exc:
            raise OperatorError(f"Ceph health gate (runbook 1-1): {exc}") from None
        return verdict(where, result.exit_status, result.stdout, result.stderr)

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        if not olds and not has_unknowns(news):  # a gate not created yet: a preview must evaluate it too
            self.evaluate(news)
        return CheckResult(inputs=news, failures=[])

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=ID, outs={**props, "report": self.evaluate(props)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)  # a check is not a state: nothing to read back

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        if checks_due(olds, news):
            self.evaluate(news)  # every preview and every up: raises with the reasons when Ceph is not healthy
        changes = [key for key in COMPARED if _plain(olds.get(key)) != _plain(news.get(key))]
        old_conn, new_conn = olds.get("connection") or {}, news.get("connection") or {}
        if any(old_conn.get(k) != new_conn.get(k) for k in ("host", "port", "user")):
            changes.append("connection")
        return DiffResult(changes=bool(changes), replaces=[], stables=[])

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**news, "report": self.evaluate(news)})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        return  # nothing in the world to remove


def _plain(value: Any) -> Any:
    """Numbers as integers (the engine sends floats), so 32 and 32.0 are the same input."""
    return int(value) if isinstance(value, float) else value


class HealthGateResource(Resource, module="pveceph", name="HealthGate"):
    report: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection"])
        super().__init__(HealthGateProvider(), name, {"report": None, **props}, pulumi.ResourceOptions.merge(opts, secret))


class CephHealthGate(pulumi.ComponentResource):
    """Runs the health gate on the admin node on every preview and up; the run stops here with the reasons if Ceph is not healthy."""

    report: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        pool: PoolSpec,
        monitors: list[str],
        connection: pulumi.Input[dict[str, Any]],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("pveceph:ceph:HealthGate", name, None, opts)
        props = {"connection": connection, "pool": pool.name, "pgNum": pool.pg_num, "size": pool.size, "monitors": list(monitors)}
        self.gate = HealthGateResource(f"{name}-check", props, child_options(self, opts))
        self.report = self.gate.report
        self.register_outputs({"report": self.report})
