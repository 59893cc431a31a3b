"""A fresh stack of the real program on the lab, driven through the Automation API.

Each test gets its own stack (and its own pool, client, storage and VM ids), in a throwaway
copy of the project folder whose config starts from the lab stack's (lab/stack.yaml).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shlex
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from proxmoxer.core import ResourceException  # type: ignore[import-untyped]
from pulumi import automation as auto
from pulumi.automation._stack import StackInitMode  # the SDK's Stack(...) modes, not re-exported

import lab
import lab.ceph
from lab import LabError, sshd, stack_config
from lab.testing.engine import ROOT, cli, engine_env, workspace_options
from lab.testing.summary import EventSummaryStack

PREFIX = "pve-ceph-ha:"


def base_config() -> dict[str, Any]:
    """The lab stack's config (lab/stack.yaml), which holds no secret: each test stack sets its own token."""
    return {k.removeprefix(PREFIX): v for k, v in stack_config.template()["config"].items()}


PROGRAMS = ROOT / "tests" / "integration" / "programs"  # the test programs (data, never imported)


def project_copy(where: Path, program: Path = ROOT / "__main__.py") -> Path:
    """The program's files, linked into a folder of the test's own (stack files stay out of the repo)."""
    where.mkdir(parents=True, exist_ok=True)
    settings = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    settings["runtime"]["options"]["virtualenv"] = str(ROOT / ".venv")
    (where / "Pulumi.yaml").write_text(yaml.safe_dump(settings))
    (where / "__main__.py").symlink_to(program)
    for name in ("clients", "components", ".lab"):
        (where / name).symlink_to(ROOT / name)
    return where


_SEALED: dict[tuple[str, str], tuple[str, str]] = {}  # (passphrase, token) -> (encryptionsalt, the token's ciphertext): LabStack._made


class LabStack:
    def __init__(
        self,
        name: str,
        lab_state: dict[str, Any],
        tmp: Path,
        edit: Callable[[dict[str, Any]], None] | None = None,
        program: Path = ROOT / "__main__.py",
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.lab = lab_state
        self.work = project_copy(tmp / "project", program)
        self.config = copy.deepcopy(base_config())
        # the lab's client.pulumi has caps for the lab stack's pool and client only; a test stack
        # has names of its own, so its Ceph commands run as client.admin unless its EDIT says otherwise
        self.config["ceph"]["admin"]["clientId"] = "admin"
        if edit is not None:
            edit(self.config)
        self.env = engine_env(tmp / "state")
        self.env["SSL_CERT_FILE"] = lab_state["pve"]["ca_bundle"]  # the Go plugins verify the lab API with it
        self.env.update(env or {})  # another backend (the lab's RADOS Gateway), another PULUMI_HOME
        self.write_config()
        self.stack = self._made(auto.LocalWorkspace(**vars(workspace_options(self.env, self.work))))
        self.log: list[str] = []

    def _made(self, workspace: auto.LocalWorkspace) -> EventSummaryStack:
        """The stack, with the API token as a secret. Most test stacks are new: `stack init` first (one
        CLI run where select, init and select again were three). A new stack takes the passphrase salt
        and the token's ciphertext of the first stack this process made with the same passphrase (both
        written to its Pulumi.<stack>.yaml, which `stack init` keeps): `pulumi config set --secret`
        would run the CLI and its key derivation (0.3 s) again for the same value."""
        pve, path = self.lab["pve"], self.work / f"Pulumi.{self.name}.yaml"
        token, before = f"{pve['stack_token_id']}={pve['stack_token_secret']}", path.read_text()
        sealed = _SEALED.get((self.env["PULUMI_CONFIG_PASSPHRASE"], token))
        document = yaml.safe_load(before) or {}
        reused = sealed is not None and "encryptionsalt" not in document
        if reused:
            document["encryptionsalt"], document.setdefault("config", {})[PREFIX + "proxmoxApiToken"] = sealed[0], {"secure": sealed[1]}
            path.write_text(yaml.safe_dump(document))
        try:
            stack = EventSummaryStack(self.name, workspace, StackInitMode.CREATE)
            if reused:
                return stack
        except auto.StackAlreadyExistsError:
            path.write_text(before)  # a stack that exists keeps its own salt: the token is set as below
            stack = EventSummaryStack(self.name, workspace, StackInitMode.SELECT)
        stack.set_config("proxmoxApiToken", auto.ConfigValue(token, secret=True))
        document = yaml.safe_load(path.read_text())
        _SEALED.setdefault(
            (self.env["PULUMI_CONFIG_PASSPHRASE"], token), (document["encryptionsalt"], document["config"][PREFIX + "proxmoxApiToken"]["secure"])
        )
        return stack

    def write_config(self) -> None:
        text = yaml.safe_dump({"config": {PREFIX + k: v for k, v in self.config.items()}})
        path = self.work / f"Pulumi.{self.name}.yaml"
        existing = yaml.safe_load(path.read_text()) if path.exists() else {}
        merged = {**(existing or {}), "config": {**(existing or {}).get("config", {}), **yaml.safe_load(text)["config"]}}
        path.write_text(yaml.safe_dump(merged))

    def reconfigure(self, edit: Callable[[dict[str, Any]], None]) -> None:
        edit(self.config)
        self.write_config()

    def _out(self, line: str) -> None:
        self.log.append(line)

    def up(self, on_event: Callable[[Any], None] | None = None) -> auto.UpResult:
        return self.stack.up(on_output=self._out, color="never", on_event=on_event)

    def up_without_refresh(self) -> str:
        """`pulumi up --refresh=false` (the Automation API can only add --refresh, and Pulumi.yaml says always)."""
        done = cli(self.env, "up", "--yes", "--refresh=false", "--color=never", "-s", self.name, cwd=self.work)
        self.log.append(done.stdout + done.stderr)
        if done.returncode != 0:
            raise AssertionError(f"pulumi up --refresh=false failed:\n{(done.stdout + done.stderr)[-3000:]}")
        return done.stdout

    def preview(self) -> auto.PreviewResult:
        return self.stack.preview(on_output=self._out, color="never", diff=True)

    def refresh(self) -> auto.RefreshResult:
        return self.stack.refresh(on_output=self._out, color="never")

    def destroy(self) -> auto.DestroyResult:
        return self.stack.destroy(on_output=self._out, color="never")

    def retire(self, client: str) -> None:
        """Destroy the stack and remove it, noting its cephx client's key first (the destroy deletes
        the client; the secrets audit looks for the key in the logs)."""
        try:
            if client_caps(client) is not None:
                remember_key(client)
            self.destroy()
        finally:
            self.remove()

    def remove(self, keep_config: bool = False) -> None:
        """Remove the stack; KEEP_CONFIG leaves Pulumi.<stack>.yaml, whose passphrase salt the secrets
        audit needs for the CLI's logs of a stack whose state lived elsewhere (the lab's RGW)."""
        if keep_config:
            cli(self.env, "stack", "rm", "--yes", "--force", "--preserve-config", "--stack", self.name, cwd=self.work)
            return
        with contextlib.suppress(auto.CommandError):
            self.stack.workspace.remove_stack(self.name, force=True)

    def text(self) -> str:
        return "\n".join(self.log)

    def verify(self) -> tuple[int, dict[str, Any], str]:
        """`python -m verify --stack NAME --json` on this stack: (exit code, the JSON report, the lines)."""
        import subprocess
        import sys

        command = [sys.executable, "-m", "verify", "--stack", self.name, "--project-dir", str(self.work), "--json"]
        done = subprocess.run(command, cwd=ROOT, env={**self.env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300, check=False)
        try:
            report: dict[str, Any] = json.loads(done.stdout)
        except ValueError:
            raise AssertionError(f"verify exited {done.returncode} with no JSON report:\n{done.stderr[-3000:]}") from None
        self.log.append(done.stderr)
        return done.returncode, report, done.stderr

    def verified(self, *ids: str) -> dict[str, dict[str, Any]]:
        """Verify; the checks IDS (every check when none is named) must pass. The checks by id."""
        code, report, lines = self.verify()
        found = {c["id"]: c for c in report["checks"]}
        failing = {i: c["problems"] for i, c in found.items() if (not ids or i in ids) and c["status"] != "pass"}
        assert not failing and (ids or code == 0), f"verify (exit {code}):\n{lines}"
        return found


def lock_files(stack: LabStack) -> list[str]:
    """The lock files of STACK's backend (a file backend: `PULUMI_BACKEND_URL` is file://...)."""
    root = Path(stack.env["PULUMI_BACKEND_URL"].removeprefix("file://").split("?")[0])
    return sorted(str(p.relative_to(root)) for p in (root / ".pulumi" / "locks").rglob("*.json"))


def two_ups_at_once(stack: LabStack, timeout: float = 600) -> str:
    """`pulumi up` twice on STACK at the same instant (two workspaces on one backend): one must be
    refused by the backend's lock. Returns the refusal's message."""
    twin = auto.select_stack(stack.name, work_dir=str(stack.work), opts=workspace_options(stack.env, stack.work))
    start = threading.Barrier(2)
    outcomes: dict[str, Any] = {}
    before = stack.stack.export_stack().deployment.get("resources") or []

    def run(label: str, target: auto.Stack) -> None:
        start.wait()
        try:
            outcomes[label] = target.up(color="never")
        except auto.CommandError as error:
            outcomes[label] = error

    threads = [threading.Thread(target=run, args=pair) for pair in (("first", stack.stack), ("second", twin))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert len(outcomes) == 2, f"an up did not end in {timeout} s: {sorted(outcomes)}"
    refused = [str(o) for o in outcomes.values() if isinstance(o, auto.CommandError)]
    raced = [r for r in refused if "could not list bucket" in r and "no such file or directory" in r]
    # The Pulumi CLI's file backend (v3.274.1, pkg/backend/diy/lock.go Lock) checks for a lock, writes
    # its own, then checks again and withdraws its own if another is there. Two runs at the same
    # instant can therefore both be refused: each saw the other's lock (CI has seen it). Neither went
    # through, which is the safe way to lose the race. Its listing can also fail on the other run's
    # vanishing temporary file (gocloud's fileblob): that run is refused all the same, before it
    # changes anything, only with that message. What must never happen is both going through.
    assert len(refused) in (1, 2), f"both ups went through: {sorted(outcomes)}"
    assert not lock_files(stack), f"a run left its lock behind: {lock_files(stack)}"
    if len(refused) == 2:
        after = stack.stack.export_stack().deployment.get("resources") or []
        assert after == before, "both ups were refused, yet the state changed"
        shape = "the CLI's lock-listing race" if raced else "both saw the other's lock"
        print(f"\n  both refused ({shape}): {refused[0].strip().splitlines()[-1][:200]}; up again alone")
        stack.up()
    locked = [r for r in refused if r not in raced]
    message = locked[0] if locked else raced[0]
    shown = next((line.strip() for line in message.splitlines() if "locked" in line or "list bucket" in line), message[-300:])
    print(f"\n  refused: {shown}")
    assert "currently locked" in message or "another update" in message or message in raced, message[-3000:]
    return message


def drill_failover(stack: LabStack, vmid: int, fault: str, deadline: float = 180) -> dict[str, Any]:
    """`python -m drill` on STACK's VM through the lab's control channel (FAULT: poweroff or isolate),
    node restored after, `pulumi preview` checked after the failover: its JSON report."""
    import subprocess
    import sys

    from lab.pve.control import Control

    command = [sys.executable, "-m", "drill", "--stack", stack.name, "--project-dir", str(stack.work), "--vm", str(vmid), "--control", Control().url]
    command += ["--method", "lab", "--fault", fault, "--yes", "--restore", "--deadline", str(deadline), "--check-preview", str(stack.work), "--json"]
    done = subprocess.run(command, cwd=ROOT, env={**stack.env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"drill ({fault}) exited {done.returncode}:\n{done.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["outcome"] == "recovered" and report["preview"]["ok"], report
    return report


def node_online(node: str) -> bool:
    """The cluster has NODE online (GET /nodes through a node that is on)."""
    return any(n["node"] == node and n["status"] == "online" for n in api().nodes.get())


def remove_stack(stack: LabStack, prefix: str, vm_ids: list[int]) -> None:
    """A fault test's teardown: every node the test left off powered on, the stack removed, and
    whatever of its names the lab still holds forgotten."""
    import lab

    for node in ("pve-node1", "pve-node2", "pve-node3"):
        if not node_online(node):
            lab.fault(node, "restore")
    stack.remove()
    forget_stack(prefix, vm_ids)


def changes(summary: dict[str, int]) -> dict[str, int]:
    """A change summary without the unchanged resources: {} when nothing would change."""
    return {op: n for op, n in summary.items() if op != "same" and n}


# -- the lab's world, read and cleaned the way an operator would (SSH to the admin node, the API) --


def names(prefix: str) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        config["ceph"]["pool"]["name"] = f"{prefix}-pool"
        config["ceph"]["client"]["name"] = prefix
        config["storage"]["id"] = f"{prefix}-rbd"

    return edit


def admin(command: str) -> str:
    """A command on the Ceph admin node, as an operator would run it over SSH."""
    return sshd.shell("ceph-admin", command)


def api() -> Any:
    """The PVE API of a node that is on (a test may have powered one off)."""
    import lab
    from lab.testing.seed import LabAccess

    return LabAccess(lab.load()).any_api()


def pool_detail(pool: str) -> dict[str, Any]:
    return next(p for p in json.loads(admin("ceph osd pool ls detail -f json")) if p["pool_name"] == pool)


def pool_exists(pool: str) -> bool:
    return pool in admin("ceph osd pool ls").split()


def client_caps(client: str) -> dict[str, str] | None:
    try:
        return json.loads(admin(f"ceph auth get client.{client} -f json"))[0]["caps"]
    except LabError:
        return None


def storages() -> dict[str, Any]:
    return {s["storage"]: s for s in api().storage.get()}


def node_shell(node: str, command: str) -> str:
    """A command in a PVE node's shell (the lab's node shims), as an operator would run it over SSH."""
    return sshd.shell(node, command)


def remove_vms(vm_ids: list[int]) -> None:
    """Delete VMs (and their HA resources) through the API, as an operator would; absent ones are skipped."""
    import lab
    from lab.testing.seed import LabAccess, remove_vm

    access = LabAccess(lab.load())
    for vm_id in vm_ids:
        if access.vm_node(vm_id) is not None or any(r["sid"] == f"vm:{vm_id}" for r in api().cluster.ha.resources.get()):
            remove_vm(access, vm_id)


def forget_stack(prefix: str, vm_ids: list[int]) -> None:
    """Remove what an interrupted earlier run of a whole-program test left: its VMs, then its storage,
    client and pool. A client deleted by the run (a drift test) is made again first: PVE cannot
    destroy a VM whose disk it cannot reach."""
    storage, client, pool = f"{prefix}-rbd", prefix, f"{prefix}-pool"
    if storage in storages() and client_caps(client) is None and pool_exists(pool):
        keyring = admin(f"ceph auth get-or-create client.{client} mon 'profile rbd' osd 'profile rbd pool={pool}'")
        api().storage(storage).put(keyring=keyring)
    remove_vms(vm_ids)
    forget(prefix)


def leftovers(pool: str, storage: str, client: str, vm_ids: list[int]) -> dict[str, Any]:
    """What of a stack is still in the lab after destroy (the pool itself is retained on purpose): {} when nothing."""
    sids = {f"vm:{v}" for v in vm_ids}
    found: dict[str, Any] = {
        "rbd images": admin(f"rbd ls {pool}").split() if pool_exists(pool) else [],
        "storage": [storage] if storage in storages() else [],
        "cephx client": [client] if client_caps(client) is not None else [],
        "vms": [r["vmid"] for r in api().cluster.resources.get(type="vm") if r["vmid"] in vm_ids],
        "ha resources": sorted(r["sid"] for r in api().cluster.ha.resources.get() if r["sid"] in sids),
    }
    for kind in ("rules", "groups"):
        try:
            entries = getattr(api().cluster.ha, kind).get()
        except ResourceException:  # PVE 9 refuses the groups API, PVE 8 has no rules
            continue
        found[f"ha {kind}"] = [e.get("rule") or e.get("group") for e in entries if sids & set(str(e.get("resources", "")).split(","))]
    return {kind: items for kind, items in found.items() if items}


LEDGER = ROOT / ".test-logs" / "cephx-keys"


@contextlib.contextmanager
def program_identity(lab_state: dict[str, Any], ceph_id: str, pool: str, client: str, pool_deletion: bool = False) -> Iterator[dict[str, str]]:
    """A cephx client with the caps docs/permissions.md documents for a stack's POOL and CLIENT
    (components/ceph_rights.py), its keyring where the admin node's ceph.conf looks; removed after.
    Yields its caps."""
    from components import ceph_rights

    documented = ceph_rights.program_caps(pool, client, scrub_window=True, pool_deletion=pool_deletion)
    keyring = Path(lab_state["ceph"]["conf"]).parent / f"ceph.client.{ceph_id}.keyring"
    make = ceph_rights.setup_commands(ceph_id, documented, "root", str(keyring))[0]  # docs/permissions.md
    admin(f"ceph auth rm client.{ceph_id} >/dev/null 2>&1; {make}")
    remember_key(ceph_id)
    try:
        yield documented
    finally:
        admin(f"ceph auth rm client.{ceph_id}; rm -f {keyring}")


def remember_key(client: str) -> None:
    """Note a test client's key before it is deleted, for the secrets audit of the test logs (tools/audit_secrets.py)."""
    remember_secret(json.loads(admin(f"ceph auth get client.{client} -f json"))[0]["key"])


def remember_secret(value: str, kind: str = "") -> None:
    """Note a secret a test made (a cephx key; KIND pve-token: an API token's secret) for the secrets audit."""
    LEDGER.parent.mkdir(exist_ok=True)
    with LEDGER.open("a", encoding="utf-8") as ledger:
        ledger.write(f"{kind}\t{value}\n" if kind else f"{value}\n")


def forget(prefix: str) -> None:
    """Remove what an earlier, interrupted run of a test may have left in the lab."""
    from components.ceph_scrub import OWNER_KEY
    from components.owners import owner_tag

    if f"{prefix}-rbd" in storages():
        api().storage(f"{prefix}-rbd").delete()
    script = shlex.quote((Path(__file__).parent / "forget_ceph.py").read_text())  # the Ceph side in one SSH round trip
    key = admin(f"/usr/bin/python3 -c {script} {prefix} {prefix}-pool {OWNER_KEY} {owner_tag('pve-ceph-ha', prefix)}").strip()
    if key:
        remember_secret(key)


@dataclasses.dataclass(frozen=True)
class Drift:
    """A change made by hand, out of band, to one of a stack's resources.

    ``what``: the change, in the failure message; ``resource``: the resource's name without the
    stack's prefix (`rbd-pool` for the URN ending `::e2e-rbd-pool`), whose plan must show it;
    ``make``: the change; ``repaired``: True once `pulumi up` has undone it."""

    what: str
    resource: str
    make: Callable[[], Any]
    repaired: Callable[[], bool]


def planned_changes(stack: LabStack) -> set[str]:
    """The URNs a preview of STACK plans to change (create, update, replace, delete: anything but
    same, read and the refresh steps the stack's `refresh: always` adds)."""
    planned: set[str] = set()

    def seen(event: Any) -> None:
        pre = event.resource_pre_event
        if pre is not None and pre.metadata.op not in (auto.OpType.SAME, auto.OpType.READ, auto.OpType.REFRESH):
            planned.add(pre.metadata.urn)

    stack.stack.preview(on_output=stack._out, on_event=seen, color="never", diff=True)
    return planned


def drifts_then_repair(stack: LabStack, *drifts: Drift) -> None:
    """Each drift made, then: the preview plans a change of every drifted resource, `pulumi up`
    undoes every drift, and a preview after it plans nothing. Drifts of one round are of different
    resources (two changes to one resource would show as one), so each is shown on its own."""
    resources = [d.resource for d in drifts]
    assert len(set(resources)) == len(resources), f"two drifts of one resource in a round: {resources}"
    for drift in drifts:
        drift.make()
    planned = planned_changes(stack)
    unseen = [d.what for d in drifts if not any(urn.endswith(f"::{stack.name}-{d.resource}") for urn in planned)]
    assert not unseen, f"preview did not show {unseen} (it planned {sorted(planned)}):\n{stack.text()[-3000:]}"
    stack.up()
    left = [d.what for d in drifts if not d.repaired()]
    assert not left, f"pulumi up did not undo {left}:\n{stack.text()[-3000:]}"
    after = planned_changes(stack)
    assert after == set(), f"preview after the up still plans {sorted(after)}:\n{stack.text()[-3000:]}"


# -- faults, for the hardening tests and bench/fault_recovery.py --


@contextlib.contextmanager
def node_powered_off(node: str) -> Iterator[None]:
    """A PVE node down (its API and sshd stop answering) for the duration; restored afterwards."""
    import lab

    lab.fault(node, "poweroff", log=lambda _line: None)
    try:
        yield
    finally:
        lab.fault(node, "restore", log=lambda _line: None)


@contextlib.contextmanager
def ssh_fault(action: str, pattern: str, **options: Any) -> Iterator[None]:
    """One SSH fault rule on the Ceph admin node (lab/dispatch) for the duration; every rule cleared afterwards."""
    from lab import sshd

    sshd.inject_fault(sshd.ADMIN_ROLE, action, pattern, **options)
    try:
        yield
    finally:
        sshd.clear_faults(sshd.ADMIN_ROLE)


@contextlib.contextmanager
def monitors_paused() -> Iterator[None]:
    """Ceph stops answering: its three monitors are frozen (SIGSTOP), as a hung or unreachable cluster looks to a client."""
    pids = [pid for name in lab.ceph.daemon_names() if name.startswith("ceph-mon.") and (pid := lab.running(name))]
    assert len(pids) == 3, pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        lab.wait_for("Ceph answering again", lambda: "HEALTH" in admin("ceph health"), deadline=60)


@contextlib.contextmanager
def monitors_stopped() -> Iterator[None]:
    """Ceph is down: its three monitors are stopped (connections refused); `lab up` starts them again on their stores."""
    names = [name for name in lab.ceph.daemon_names() if name.startswith("ceph-mon.")]
    for name in names:
        pid = lab.running(name)
        assert pid is not None, name
        os.kill(pid, signal.SIGTERM)
    lab.wait_for("the monitors to stop", lambda: not any(lab.running(name) for name in names), deadline=30)
    try:
        yield
    finally:
        lab.ceph.up(log=lambda _line: None)
