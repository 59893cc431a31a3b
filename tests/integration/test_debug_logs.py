"""Secrets stay out of the engine's and the proxmoxve plugin's logs at debug level (issue #14).

One stack on the lab: the program's dynamic resources (tests/integration/programs/dynamic_only:
the pool, the cephx client whose key the storage is given, the storage, with the API token) and the
``proxmoxve`` plugin at work with the same token (its provider and two invokes that call the API).
``pulumi preview`` then ``pulumi up`` run with ``--logtostderr -v=9 --logflow --debug``: the engine
logs at its most verbose and passes the verbosity on to the plugins, TF_LOG=DEBUG makes bpg's
provider log every API request through the engine, and PULUMI_DEBUG_COMMANDS is on. What they
print goes to .test-logs/debug-logs/, which the secrets audit of ``make test`` reads; this test
asserts that the API token and the cephx keys (the stack's client's among them) appear 0 times
in it, nor in the CLI's own logs of the two runs ($PULUMI_HOME/logs, decrypted as
``pulumi logs decrypt`` would).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.testing.engine import PASSPHRASE, ROOT, cli
from lab.testing.shared import settled
from lab.testing.stack import PROGRAMS, LabStack, admin, forget, names
from tools import audit_secrets

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

NAME = "dbglog"  # its pool, client and storage: dbglog-pool, client.dbglog, dbglog-rbd
LOGS = ROOT / ".test-logs" / "debug-logs"
DEBUG = ("--logtostderr", "-v=9", "--logflow", "--debug", "--color=never")
SECRETS = ("PVE API token", "cephx key")

# The plugin at work with the stack's token, after the dynamic-only program's own resources.
PLUGIN_AT_WORK = """
import pulumi_proxmoxve as proxmoxve

pve = proxmoxve.Provider(f"{name}-pve", endpoint=settings.proxmox.endpoint, api_token=token, insecure=not settings.proxmox.verify_tls)
invoke = pulumi.InvokeOptions(provider=pve)
pulumi.export("pveVersion", proxmoxve.get_version_output(opts=invoke).version)
pulumi.export("pveNodes", proxmoxve.get_nodes_legacy_output(opts=invoke).names)
"""


def program(where: Path) -> Path:
    path = where / "debug_program.py"
    path.write_text((PROGRAMS / "dynamic_only" / "__main__.py").read_text() + PLUGIN_AT_WORK)
    return path


@dataclass
class Runs:
    started: float  # time.time() before the stack was made
    state: Path  # the stack's state (its passphrase salt)
    pulumi_home: Path
    client_key: str  # the stack's cephx client's key, after the up
    seconds: dict[str, float]  # per command


@pytest.fixture(scope="module")
def runs(lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """The stack, its preview and its up at debug level, their output written to LOGS."""
    settled()  # another run's fault (a node off: its API refuses the plugin) must be over
    started = time.time()
    forget(NAME)
    tmp = tmp_path_factory.mktemp(NAME)
    stack = LabStack(NAME, lab_state, tmp, names(NAME), program=program(tmp))
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    env = {**stack.env, "TF_LOG": "DEBUG", "PULUMI_DEBUG_COMMANDS": "true"}
    seconds: dict[str, float] = {}
    try:
        for command in (["preview"], ["up", "--yes"]):
            t0 = time.monotonic()
            done = cli(env, *command, *DEBUG, "-s", NAME, cwd=stack.work)
            seconds[command[0]] = time.monotonic() - t0
            (LOGS / f"{command[0]}.stdout").write_text(done.stdout)
            (LOGS / f"{command[0]}.stderr").write_text(done.stderr)
            assert done.returncode == 0, f"pulumi {command[0]} at debug level failed:\n{(done.stdout + done.stderr)[-3000:]}"
        client_key = json.loads(admin(f"ceph auth get client.{NAME} -f json"))[0]["key"]
        yield Runs(started, tmp / "state", Path(env.get("PULUMI_HOME") or Path.home() / ".pulumi"), client_key, seconds)
    finally:
        stack.retire(NAME)


def debug_text() -> str:
    return "\n".join(path.read_text(errors="replace") for path in sorted(LOGS.iterdir()))


def test_the_engine_and_the_plugin_logged_at_debug_level(runs: Runs) -> None:
    """Where the secrets would be, the logs say so, masked: the test above would prove nothing otherwise."""
    text = debug_text()
    assert "Launching plugin 'proxmoxve (resource)'" in text, "the engine did not log at -v=9"
    # the plugin's own glog at -v=9 (--logflow), the provider's inputs as it received them
    assert "Unmarshaling property for RPC[inputs]: apiToken={[secret]}" in text, "the plugin did not log at -v=9"
    # bpg's HTTP transport at TF_LOG=DEBUG: every API request the plugin made, its header masked
    assert "tf_http_req_uri=/api2/json/version" in text, "bpg's provider did not log its API requests"
    assert 'Authorization="PVEAPIToken=[secret]"' in text, "bpg's provider did not log the request headers"


def test_no_token_and_no_cephx_key_in_the_debug_logs_nor_the_cli_logs(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    secrets = {kind: values for kind, values in audit_secrets.lab_secrets(None).items() if kind in SECRETS}
    assert runs.client_key.encode() in secrets["cephx key"], "the stack's client key is not among those searched"
    cli_logs = [log for log in audit_secrets.engine_logs_since(runs.pulumi_home / "logs", runs.started) if audit_secrets.stack_of_log(log) == NAME]
    report = audit_secrets.audit([LOGS, runs.state], secrets, set(), cli_logs, PASSPHRASE)
    with capsys.disabled():
        seconds = ", ".join(f"{command} {s:.1f} s" for command, s in runs.seconds.items())
        print(f"\n  debug logs: {report.kinds()}; {report.size / 1e6:.1f} MB searched ({seconds})")
    assert report.hits == []
    assert report.files[audit_secrets.DEBUG_LOGS] == 4
    assert report.files[f"{audit_secrets.ENGINE_LOGS} decrypted"] >= 2, "the CLI's logs of the preview and the up were not read"
