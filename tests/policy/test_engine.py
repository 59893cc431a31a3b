"""The policy pack through the real engine: its analysis of a stack's state, and a preview it stops.

The preview of VMs and HA resources runs the proxmoxve provider plugin that make setup builds
(tools/proxmoxve); the rest needs only the CLI, the Python language host and the dynamic
provider of the toolchain.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pveceph_policy.pack import CEPHX_CAPS, DISK_SETTINGS, HA_CPU_TYPE, HA_DISKS_ON_RBD, HA_MAX_RESTART, RBD_CONTENT, VMS_HA_MANAGED

from lab.testing.engine import versions
from tests.policy import engine
from tests.policy.stacks import DYNAMIC, Spec, client, cpu, disk, good_stack, ha, storage, vm

# needs the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = pytest.mark.engine

MANDATORY = (HA_DISKS_ON_RBD, HA_CPU_TYPE, CEPHX_CAPS, HA_MAX_RESTART, RBD_CONTENT)
ADVISORY = (DISK_SETTINGS, VMS_HA_MANAGED)
PROXMOXVE_VERSION = versions()["PROXMOXVE_VERSION"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = engine.engine_env(tmp_path / "state")
    for tool in ("pulumi", "pulumi-language-python", "pulumi-resource-pulumi-python"):
        if shutil.which(tool, path=environment["PATH"]) is None:
            pytest.fail(f"{tool} is not on the toolchain's PATH: run `make setup`")
    return environment


def state(specs: list[Spec], where: Path) -> Path:
    return engine.state_file([(s.type, s.name, s.props) for s in specs], where / "state.json")


def test_engine_finds_nothing_wrong_with_the_runbooks_deployment(env: dict[str, str], tmp_path: Path) -> None:
    code, output = engine.analyze(state(good_stack(), tmp_path), env)
    assert code == 0, output
    assert "pve-ceph-ha" in output and "[mandatory]" not in output and "[advisory]" not in output


def test_engine_reports_every_policy_on_a_deployment_that_breaks_them_all(env: dict[str, str], tmp_path: Path) -> None:
    broken = [
        storage(DYNAMIC, content="rootdir"),
        client(mon="allow r", osd="allow rwx pool=rbd-pool"),
        vm(101, "vm101", cpu=cpu("host"), disks=[disk(datastoreId="local-lvm", cache="none")]),
        ha(101, maxRestart=0),
        vm(150, "vm150"),
    ]
    code, output = engine.analyze(state(broken, tmp_path), env)
    assert code != 0, output
    for name in MANDATORY:
        assert f"[mandatory]  {name}" in output, output
    for name in ADVISORY:
        assert f"[advisory]  {name}" in output, output
    assert "error: one or more mandatory policy violations were found" in output


DYNAMIC_PROGRAM = """\
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class Noop(ResourceProvider):
    def create(self, props):
        return CreateResult(id_=props["name"], outs=props)


class RbdStorage(Resource, module="pveceph", name="RbdStorage"):
    def __init__(self, name, props):
        super().__init__(Noop(), name, props)


class CephClient(Resource, module="pveceph", name="CephClient"):
    def __init__(self, name, props):
        super().__init__(Noop(), name, props)


config = pulumi.Config()
RbdStorage("storage", {"name": "ceph-rbd", "storageId": "ceph-rbd", "pool": "rbd-pool", "monhost": "10.10.10.101", "content": config.require("content")})
CephClient("client", {"name": "proxmox", "caps": {"mon": config.require("mon"), "osd": "profile rbd pool=rbd-pool"}})
"""


def new_stack(project: Path, env: dict[str, str], name: str, config: dict[str, str]) -> None:
    code, output = engine.run(env, "stack", "init", name, cwd=project)
    assert code == 0, output
    for key, value in config.items():
        code, output = engine.run(env, "config", "set", "--stack", name, key, value, cwd=project)
        assert code == 0, output


def test_preview_passes_with_profile_rbd_caps_and_images_content(env: dict[str, str], tmp_path: Path) -> None:
    project = engine.throwaway_project(tmp_path / "project", DYNAMIC_PROGRAM)
    new_stack(project, env, "good", {"content": "images", "mon": "profile rbd"})
    ok, output = engine.preview_with_policy(project, "good", env)
    assert ok, output
    assert "[mandatory]" not in output


def test_preview_is_stopped_by_runbook_caps_and_a_storage_without_images(env: dict[str, str], tmp_path: Path) -> None:
    project = engine.throwaway_project(tmp_path / "project", DYNAMIC_PROGRAM)
    new_stack(project, env, "bad", {"content": "rootdir", "mon": "allow r"})
    ok, output = engine.preview_with_policy(project, "bad", env)
    assert not ok, output
    assert f"[mandatory]  {CEPHX_CAPS}" in output and f"[mandatory]  {RBD_CONTENT}" in output, output


VM_PROGRAM = """\
import pulumi
import pulumi_proxmoxve as proxmoxve
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class Noop(ResourceProvider):
    def create(self, props):
        return CreateResult(id_=props["storageId"], outs=props)


class RbdStorage(Resource, module="pveceph", name="RbdStorage"):
    def __init__(self, name, props):
        super().__init__(Noop(), name, props)


config = pulumi.Config()
pve = proxmoxve.Provider("pve", endpoint="https://127.0.0.1:8006", api_token=pulumi.Output.secret("root@pam!policy=00000000-0000-0000-0000-000000000000"), insecure=True)
opts = pulumi.ResourceOptions(provider=pve)
storage = RbdStorage("storage", {"storageId": "ceph-rbd", "pool": "rbd-pool", "monhost": "10.10.10.101", "content": "images"})
vm = proxmoxve.VmLegacy(
    "vm101",
    node_name="pve-node1",
    vm_id=101,
    name="vm101",
    cpu=proxmoxve.VmLegacyCpuArgs(cores=1, type=config.require("cpuType")),
    scsi_hardware="virtio-scsi-pci",
    disks=[proxmoxve.VmLegacyDiskArgs(interface="scsi0", datastore_id=config.require("datastore"), size=1, file_format="raw", cache="writeback", discard="on")],
    started=False,
    opts=opts,
)
proxmoxve.Haresource("vm101-ha", resource_id="vm:101", type="vm", state="started", max_restart=1, max_relocate=1, opts=pulumi.ResourceOptions(provider=pve, depends_on=[vm]))
"""


def proxmoxve_plugin(env: dict[str, str]) -> Path | None:
    plugins = Path(env.get("PULUMI_HOME", Path.home() / ".pulumi")) / "plugins"
    found = sorted(plugins.glob(f"resource-proxmoxve-v{PROXMOXVE_VERSION}*"))
    return found[0] if found else None


def test_preview_of_an_ha_vm_off_the_rbd_storage_with_cpu_host_is_stopped(env: dict[str, str], tmp_path: Path) -> None:
    assert proxmoxve_plugin(env) is not None, f"the proxmoxve {PROXMOXVE_VERSION} plugin is not installed in PULUMI_HOME: run `make setup`"
    project = engine.throwaway_project(tmp_path / "project", VM_PROGRAM)
    new_stack(project, env, "good", {"cpuType": "x86-64-v2-AES", "datastore": "ceph-rbd"})
    ok, output = engine.preview_with_policy(project, "good", env)
    assert ok, output
    new_stack(project, env, "bad", {"cpuType": "host", "datastore": "local-lvm"})
    ok, output = engine.preview_with_policy(project, "bad", env)
    assert not ok, output
    assert f"[mandatory]  {HA_DISKS_ON_RBD}" in output and f"[mandatory]  {HA_CPU_TYPE}" in output, output
