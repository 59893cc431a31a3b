"""Hardening: the real engine on the program's own resources (pool, cephx client, RBD storage;
tests/integration/programs/dynamic_only) when the world misbehaves.

Each case injects one fault during `pulumi up`, from nothing or from a converged stack, checks
that `up` stops with a message that names the step (and no Python traceback), removes the fault,
and checks that the next `up` converges with nothing orphaned or duplicated: one pool, one cephx
client and one `/storage` entry in the lab, each in the state once and finished, `preview` with
no change; from a converged stack, an RBD image written into the pool before the fault has the
same checksum after it.

1. the PVE API answers 500 to ``POST /storage`` during a cold up;
2. the PVE API does not answer ``GET /storage/{id}`` (the client's timeout);
3. the Ceph admin node's SSH port is closed: nothing is created in Ceph;
4. the admin node's SSH host key changed: refused, and nothing is created in Ceph;
5. the PVE API answers ``GET /storage/{id}`` with a shape that is not a storage (``data: null``),
   and an HTML page with status 200 (a stand-in endpoint: the lab's control channel does not
   pass fakepve's ``html`` on);
6. two `pulumi up` on one stack at once: the backend's lock refuses one, the state stays valid;
7. secrets audit across up, preview, refresh and destroy (the whole test run is audited again
   by tools/audit_secrets.py at the end of `make test`);
8. a PVE node goes offline in the middle of a cold up, and during an update of the storage;
9. Ceph does not answer (its monitors frozen) or is down (its monitors stopped, connections
   refused) during a cold up, and does not answer during an update;
10. the SSH connection drops after ``ceph osd pool create`` took effect, before
    ``ceph auth get-or-create`` ran, and during an update (lab/dispatch SSH fault rules);
11. Ceph slower than ``ssh.commandTimeout`` on create (the pool appears after the run gave up),
    and slow within it (the run waits);
12. Ceph prints garbage instead of JSON, cold and during the refresh of a converged stack (a
    garbage answer must never read as "the pool is gone");
13. PVE API faults on a converged stack: the refresh's read hangs, then the update's PUT is refused.

The full program's cases (VMs and their disks, HA resources, with the ``proxmoxve`` plugin)
are in test_hardening_vms.py.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

import lab
import lab.ceph
from clients import ceph_cli
from lab import sshd
from lab.pve.control import Control
from lab.testing.engine import cli
from lab.testing.stack import (
    PROGRAMS,
    ROOT,
    LabStack,
    admin,
    api,
    changes,
    client_caps,
    forget,
    monitors_paused,
    monitors_stopped,
    names,
    node_powered_off,
    pool_detail,
    pool_exists,
    storages,
    two_ups_at_once,
)

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

PROGRAM = PROGRAMS / "dynamic_only" / "__main__.py"
HardStack = Callable[[str], LabStack]


def hard_stack(prefix: str, lab_state: dict[str, Any], tmp: Path) -> LabStack:
    forget(prefix)
    return LabStack(prefix, lab_state, tmp, names(prefix), program=PROGRAM)


@pytest.fixture
def hard(lab_state: dict[str, Any], tmp_path: Path) -> Iterator[HardStack]:
    """Makes a fresh stack named PREFIX (pool PREFIX-pool, client PREFIX, storage PREFIX-rbd); removes it and its objects afterwards."""
    made: list[tuple[LabStack, str]] = []

    def make(prefix: str) -> LabStack:
        made.append((hard_stack(prefix, lab_state, tmp_path), prefix))
        return made[-1][0]

    yield make
    for stack, prefix in made:
        stack.remove()
        forget(prefix)


def failed_up(stack: LabStack) -> str:
    """`up` must fail; its message, which must carry no Python traceback."""
    with pytest.raises(auto.CommandError) as info:
        stack.up()
    message = str(info.value)
    assert "Traceback" not in message, message[-3000:]
    diagnostics = message.partition("Diagnostics:")[2].splitlines()
    said = [line.strip(" \t*") for line in diagnostics if line.strip().startswith("* ")]
    said += [
        line.strip()
        for line in diagnostics
        if line.strip().startswith("error: ") and not any(w in line for w in ("error occurred", "update failed", "Resource monitor"))
    ]
    print(f"\n  up stopped: {said[0] if said else message[-300:]}")
    return message


def exported(stack: LabStack) -> list[dict[str, Any]]:
    """The resources of the stack's state (`pulumi stack export`)."""
    state = cli(stack.env, "stack", "export", "--stack", stack.name, cwd=stack.work)
    assert state.returncode == 0, state.stderr
    return json.loads(state.stdout)["deployment"].get("resources") or []


def recorded(stack: LabStack, kind: str) -> list[dict[str, Any]]:
    """The state's resources of one of the program's dynamic types (RbdPool, CephClient, RbdStorage)."""
    return [r for r in exported(stack) if r["type"] == f"pulumi-python:dynamic/pveceph:{kind}"]


def assert_recorded_unfinished(stack: LabStack, kind: str, id_: str) -> None:
    """A create that failed half-way is in the state, once, with its reason: nothing is orphaned."""
    found = recorded(stack, kind)
    assert [r.get("id") for r in found] == [id_], found
    assert found[0].get("initErrors"), found[0]


def assert_converged(stack: LabStack, prefix: str) -> None:
    """Exactly one pool, one cephx client and one `/storage` entry, in the lab and in the state, and nothing left to change."""
    assert admin("ceph osd pool ls").split().count(f"{prefix}-pool") == 1
    entities = [entry["entity"] for entry in json.loads(admin("ceph auth ls -f json"))["auth_dump"]]
    assert entities.count(f"client.{prefix}") == 1
    assert [s["storage"] for s in api().storage.get()].count(f"{prefix}-rbd") == 1
    resources = exported(stack)
    for kind, id_ in (("RbdPool", f"{prefix}-pool"), ("CephClient", f"client.{prefix}"), ("RbdStorage", f"{prefix}-rbd")):
        found = [r for r in resources if r["type"] == f"pulumi-python:dynamic/pveceph:{kind}"]
        assert [r.get("id") for r in found] == [id_] and not found[0].get("initErrors"), found
    assert changes(stack.preview().change_summary) == {}, stack.text()[-3000:]


class Marker:
    """Data written into the stack's pool before a fault (an RBD image of random bytes), checked after it."""

    def __init__(self, pool: str) -> None:
        self.image = f"{pool}/hardening-marker"
        admin(f"head -c 4194304 /dev/urandom | rbd import --no-progress - {self.image}")
        self.digest = self.checksum()

    def checksum(self) -> str:
        return admin(f"rbd export --no-progress {self.image} - | sha256sum").split()[0]

    def intact(self) -> bool:
        return self.checksum() == self.digest


def nothing_in_ceph(prefix: str) -> bool:
    return not pool_exists(f"{prefix}-pool") and client_caps(prefix) is None


def test_api_500_on_post_storage_fails_naming_the_call_then_converges(hard: HardStack, control: Control) -> None:
    stack = hard("hardpost")
    control.fail("POST", "/storage", status=500, message="hard: cfs lock 'file-storage_cfg' error: got lock request timeout", times=1)
    message = failed_up(stack)
    assert "POST /storage (rbd hardpost-rbd): 500" in message and "got lock request timeout" in message, message[-3000:]
    assert "hardpost-rbd" not in [s["storage"] for s in api().storage.get()]
    control.clear_failures()
    stack.up()
    assert_converged(stack, "hardpost")


def test_api_timeout_on_get_storage_fails_naming_the_call_then_converges(hard: HardStack, control: Control) -> None:
    stack = hard("hardhang")
    # the providers' API client gives up after proxmox.apiTimeout (clients.pve.api.connect)
    stack.reconfigure(lambda c: c["proxmox"].update(apiTimeout=5))
    control.fail("GET", "/storage/hardhang-rbd", hang=15, times=1)
    message = failed_up(stack)
    assert "GET /storage/hardhang-rbd: ReadTimeout" in message and "timed out" in message, message[-3000:]
    control.clear_failures()
    stack.up()
    assert_converged(stack, "hardhang")


def test_ssh_to_a_closed_admin_port_fails_before_anything_is_created(hard: HardStack) -> None:
    stack = hard("hardssh")
    stack.reconfigure(lambda c: c["ceph"]["admin"].update(port=2299))
    message = failed_up(stack)
    assert "SSH to root@127.10.10.101:2299 failed" in message, message[-3000:]
    assert nothing_in_ceph("hardssh")
    stack.reconfigure(lambda c: c["ceph"]["admin"].update(port=2222))
    stack.up()
    assert_converged(stack, "hardssh")


def test_changed_ssh_host_key_is_refused_and_nothing_is_created(hard: HardStack, lab_state: dict[str, Any], tmp_path: Path) -> None:
    stack = hard("hardkey")
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    other_key = other.with_suffix(".pub").read_text().split()[:2]
    admin_entry = f"[{lab_state['ceph']['admin_host']}]:{lab_state['ssh']['port']}"
    lines = Path(lab_state["ssh"]["known_hosts"]).read_text().splitlines()
    forged = [" ".join([admin_entry, *other_key]) if line.split()[0] == admin_entry else line for line in lines]
    assert forged != lines
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("\n".join(forged) + "\n")
    stack.reconfigure(lambda c: c["ssh"].update(knownHostsFile=str(known_hosts)))
    message = failed_up(stack)
    assert "SSH to root@127.10.10.101:2222: the host key changed since it was recorded in known_hosts" in message, message[-3000:]
    assert nothing_in_ceph("hardkey")
    stack.reconfigure(lambda c: c["ssh"].update(knownHostsFile=lab_state["ssh"]["known_hosts"]))
    stack.up()
    assert_converged(stack, "hardkey")


def test_api_answer_of_the_wrong_shape_fails_clearly_then_converges(hard: HardStack, control: Control) -> None:
    stack = hard("hardshape")
    # status 200 with {"data": null}: a proxy or a broken API, not a storage and not "does not exist"
    control.fail("GET", "/storage/hardshape-rbd", status=200, message="hard: not a storage", times=1)
    message = failed_up(stack)
    assert "GET /storage/hardshape-rbd: unexpected answer from the PVE API" in message, message[-3000:]
    control.clear_failures()
    stack.up()
    assert_converged(stack, "hardshape")


class HtmlPage(http.server.BaseHTTPRequestHandler):
    """What a reverse proxy's maintenance page or a captive portal answers: 200 and HTML, whatever was asked."""

    def do_GET(self) -> None:
        body = b"<html><body><h1>Under maintenance</h1></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def html_endpoint(lab_state: dict[str, Any]) -> Iterator[str]:
    """An HTTPS endpoint with the lab nodes' certificate (so TLS checks pass) that answers HTML to everything."""
    tls = Path(lab_state["pve"]["ca_file"]).parent
    server = http.server.ThreadingHTTPServer((lab_state["pve"]["nodes"]["pve-node1"]["address"], 0), HtmlPage)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "pve-ssl.pem", tls / "pve-ssl.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"https://{host}:{port}"
    server.shutdown()
    server.server_close()


def test_api_answering_an_html_page_fails_clearly_then_converges(hard: HardStack, lab_state: dict[str, Any], html_endpoint: str) -> None:
    # The lab's control channel does not pass fakepve's html= on, so the HTML comes from a stand-in endpoint.
    stack = hard("hardhtml")
    stack.reconfigure(lambda c: c["proxmox"].update(endpoint=html_endpoint))
    message = failed_up(stack)
    assert "GET /storage/hardhtml-rbd: unexpected answer from the PVE API" in message, message[-3000:]
    stack.reconfigure(lambda c: c["proxmox"].update(endpoint=lab_state["pve"]["endpoint"]))
    stack.up()
    assert_converged(stack, "hardhtml")


def test_two_concurrent_ups_on_one_stack_one_is_refused_by_the_lock(hard: HardStack) -> None:
    stack = hard("hardlock")
    two_ups_at_once(stack)
    assert_converged(stack, "hardlock")
    state = cli(stack.env, "stack", "export", "--stack", "hardlock", cwd=stack.work)
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout)["deployment"]["resources"]


def test_no_secret_in_state_output_or_api_log_across_up_preview_refresh_destroy(hard: HardStack, lab_state: dict[str, Any]) -> None:
    stack = hard("hardsecret")
    stack.up()
    key = json.loads(admin("ceph auth get client.hardsecret -f json"))[0]["key"]
    stack.preview()
    stack.refresh()
    state = cli(stack.env, "stack", "export", "--stack", "hardsecret", cwd=stack.work)
    assert state.returncode == 0, state.stderr
    shown = cli(stack.env, "stack", "export", "--show-secrets", "--stack", "hardsecret", cwd=stack.work).stdout
    stack.destroy()
    token = lab_state["pve"]["stack_token_secret"]  # the stacks' token (pulumi@pve!ha)
    # the key's base64 body, line by line (any one of them would leak it; short tails could match by chance)
    private_key = [line for line in Path(lab_state["ssh"]["private_key_path"]).read_text().splitlines()[1:-1] if len(line) >= 40]
    server_log = (ROOT / ".lab" / "pve" / "server.log").read_text(errors="replace")
    for what, secrets in (("cephx key", [key]), ("API token", [token]), ("SSH private key", private_key)):
        assert secrets and all(line in shown for line in secrets), f"the {what} is not what the state holds: the audit would prove nothing"
        for line in secrets:
            assert line not in state.stdout, f"{what} in the state"
            assert line not in stack.text(), f"{what} in the engine's output"
            assert line not in server_log, f"{what} in .lab/pve/server.log"


def test_node_going_offline_in_the_middle_of_a_cold_up_fails_fast_records_the_storage_then_converges(hard: HardStack) -> None:
    stack = hard("hardnode")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["up"] = stack.up()
        except auto.CommandError as error:
            outcome["error"] = error

    runner = threading.Thread(target=run)
    runner.start()
    # the run is under way (the pool exists, the storage is still to come): pve-node3 goes down
    lab.wait_for("the run to create the pool", lambda: pool_exists("hardnode-pool"), deadline=120)
    with node_powered_off("pve-node3"):
        runner.join(timeout=300)
        message = str(outcome.get("error", ""))
        assert "storage hardnode-rbd cannot become active on pve-node3: the cluster reports it offline" in message, outcome
        assert "remove it from proxmox.nodes" in message and "Traceback" not in message
        # the storage was registered before the wait: it is in the state (unfinished), not orphaned
        assert_recorded_unfinished(stack, "RbdStorage", "hardnode-rbd")
        assert list(storages()).count("hardnode-rbd") == 1
    stack.up()
    assert_converged(stack, "hardnode")


def test_node_offline_during_an_update_fails_then_converges_and_data_survives(hard: HardStack) -> None:
    stack = hard("hardnode2")
    stack.up()
    marker = Marker("hardnode2-pool")
    with node_powered_off("pve-node2"):
        stack.reconfigure(lambda c: c["storage"].update(content=["images", "rootdir"]))
        message = failed_up(stack)
        assert "storage hardnode2-rbd cannot become active on pve-node2" in message, message[-3000:]
    stack.up()
    assert storages()["hardnode2-rbd"]["content"] in ("images,rootdir", "rootdir,images")
    assert_converged(stack, "hardnode2")
    assert marker.intact()


@pytest.mark.parametrize("outage", [monitors_paused, monitors_stopped], ids=["not-answering", "down"])
def test_ceph_not_answering_or_down_during_a_cold_up_fails_with_the_timeout_and_creates_nothing(
    hard: HardStack, outage: Callable[[], contextlib.AbstractContextManager[None]]
) -> None:
    stack = hard("hardmon")
    stack.reconfigure(lambda c: c["ssh"].update(commandTimeout=10))
    with outage():
        message = failed_up(stack)
        assert "`ceph osd pool ls` did not finish within 10 s" in message and "hardmon" in message, message[-3000:]
    assert nothing_in_ceph("hardmon") and not recorded(stack, "RbdPool")
    stack.up()
    assert_converged(stack, "hardmon")


def test_ceph_not_answering_during_an_update_fails_then_converges_and_data_survives(hard: HardStack) -> None:
    stack = hard("hardmon2")
    stack.reconfigure(lambda c: c["ssh"].update(commandTimeout=10))
    stack.up()
    marker = Marker("hardmon2-pool")
    stack.reconfigure(lambda c: c["ceph"]["pool"].update(pgNum=64))
    with monitors_paused():
        message = failed_up(stack)
        assert "did not finish within 10 s" in message and "hardmon2-pool" in message, message[-3000:]
    stack.up()
    assert pool_detail("hardmon2-pool")["pg_num_target"] == 64
    assert_converged(stack, "hardmon2")
    assert marker.intact()


@pytest.fixture
def ssh_faults() -> Iterator[Any]:
    """The Ceph admin node's SSH fault rules (lab/dispatch); cleared afterwards, whatever happened."""
    sshd.clear_faults(sshd.ADMIN_ROLE)
    yield lambda action, pattern, **kw: sshd.inject_fault(sshd.ADMIN_ROLE, action, pattern, **kw)
    sshd.clear_faults(sshd.ADMIN_ROLE)


def test_connection_dropped_after_pool_create_took_effect_is_recorded_then_converges(hard: HardStack, ssh_faults: Any) -> None:
    stack = hard("hardrop")
    ssh_faults("drop-after", "ceph osd pool create hardrop-pool *")
    message = failed_up(stack)
    assert "the connection dropped while running `ceph osd pool create`; whether it took effect is unknown" in message, message[-3000:]
    assert "The pool is recorded in the state" in message
    assert pool_exists("hardrop-pool")  # it took effect: the state must know it, or the rerun would call it foreign
    assert_recorded_unfinished(stack, "RbdPool", "hardrop-pool")
    stack.up()
    assert_converged(stack, "hardrop")


def test_connection_dropped_before_client_create_ran_is_recorded_then_converges(hard: HardStack, ssh_faults: Any) -> None:
    stack = hard("hardrop2")
    ssh_faults("drop-before", "ceph auth get-or-create client.hardrop2 *")
    message = failed_up(stack)
    assert "the connection dropped while running `ceph auth get-or-create client.hardrop2`" in message, message[-3000:]
    assert client_caps("hardrop2") is None  # it did not take effect; the state records it as unknown,
    assert_recorded_unfinished(stack, "CephClient", "client.hardrop2")  # and the next refresh finds it gone
    stack.up()
    assert_converged(stack, "hardrop2")


def test_connection_dropped_during_an_update_then_converges_and_data_survives(hard: HardStack, ssh_faults: Any) -> None:
    stack = hard("hardrop3")
    stack.up()
    marker = Marker("hardrop3-pool")
    stack.reconfigure(lambda c: c["ceph"]["pool"].update(pgNum=64))
    ssh_faults("drop-after", "ceph osd pool set hardrop3-pool pg_num *")
    message = failed_up(stack)
    assert "Ceph pool hardrop3-pool: SSH to root@127.10.10.101:2222: the connection dropped while running `ceph osd pool set`" in message, message[-3000:]
    stack.up()
    assert pool_detail("hardrop3-pool")["pg_num_target"] == 64
    assert_converged(stack, "hardrop3")
    assert marker.intact()


def test_ceph_slower_than_the_timeout_on_create_is_recorded_then_converges(hard: HardStack, ssh_faults: Any) -> None:
    stack = hard("hardslow")
    stack.reconfigure(lambda c: c["ssh"].update(commandTimeout=5))
    ssh_faults("slow", "ceph osd pool create hardslow-pool *", seconds=8)
    message = failed_up(stack)
    assert "Ceph pool hardslow-pool: SSH to root@127.10.10.101:2222: `ceph osd pool create` did not finish within 5 s" in message, message[-3000:]
    assert_recorded_unfinished(stack, "RbdPool", "hardslow-pool")
    lab.wait_for("the slow create to land", lambda: pool_exists("hardslow-pool"), deadline=30)
    stack.up()
    assert_converged(stack, "hardslow")


def test_ceph_slow_within_the_timeout_is_waited_for(hard: HardStack, ssh_faults: Any) -> None:
    stack = hard("hardslow2")
    stack.reconfigure(lambda c: c["ssh"].update(commandTimeout=30))
    ssh_faults("slow", "*ceph*", times=4, seconds=3)  # every Ceph command: the CLI's writes and the monitor read script
    stack.up()
    assert [rule["remaining"] for rule in sshd.faults(sshd.ADMIN_ROLE)] == [0]
    assert_converged(stack, "hardslow2")


# `ceph osd pool ls detail` as the program asks it: a monitor command in the admin node's read script (ceph_cli.mon_reads)
POOL_LS = f"python3 - {ceph_cli.MON_READS} *osd pool ls*"


def test_ceph_printing_garbage_is_an_error_never_a_missing_pool(hard: HardStack, ssh_faults: Any) -> None:
    stack = hard("hardjunk")
    # cold: the first look at the pools is garbage; nothing is created
    ssh_faults("garbage", POOL_LS)
    message = failed_up(stack)
    assert "ceph osd pool ls detail: Ceph did not answer with JSON: '*** Caught signal (Segmentation fault) **" in message, message[-3000:]
    assert nothing_in_ceph("hardjunk") and not recorded(stack, "RbdPool")
    stack.up()
    marker = Marker("hardjunk-pool")
    # converged: garbage during the refresh must not read as "the pool is gone" (the state would drop it)
    ssh_faults("garbage", POOL_LS)
    message = failed_up(stack)
    assert "did not answer with JSON" in message, message[-3000:]
    assert [r.get("id") for r in recorded(stack, "RbdPool")] == ["hardjunk-pool"]
    stack.up()
    assert_converged(stack, "hardjunk")
    assert marker.intact()


def test_api_faults_on_a_converged_stack_fail_naming_the_call_then_converge_and_data_survives(hard: HardStack, control: Control) -> None:
    stack = hard("hardapi")
    stack.reconfigure(lambda c: c["proxmox"].update(apiTimeout=5))  # recorded with the storage: the refresh reads with it
    stack.up()
    marker = Marker("hardapi-pool")
    # the refresh before the update cannot read the storage (no answer within the client's 5 s)
    control.fail("GET", "/storage/hardapi-rbd", hang=15, times=1)
    message = failed_up(stack)
    assert "GET /storage/hardapi-rbd: ReadTimeout" in message, message[-3000:]
    assert [r.get("id") for r in recorded(stack, "RbdStorage")] == ["hardapi-rbd"]  # a failed read is not "gone"
    # the update itself is refused by PVE
    stack.reconfigure(lambda c: c["storage"].update(content=["images", "rootdir"]))
    control.fail("PUT", "/storage/hardapi-rbd", status=500, message="hard: cfs lock 'file-storage_cfg' error: got lock request timeout", times=1)
    message = failed_up(stack)
    assert "PUT /storage/hardapi-rbd: 500" in message and "got lock request timeout" in message, message[-3000:]
    control.clear_failures()
    stack.up()
    assert storages()["hardapi-rbd"]["content"] in ("images,rootdir", "rootdir,images")
    assert_converged(stack, "hardapi")
    assert marker.intact()
