"""The lab's VM processes: a started VM is a real librbd client (holder.py, run by the system's
python3 with Debian's python3-rbd) holding its RBD disks' exclusive locks, one process per VM.

A model module (a mixin of app.LabPve; it never imports the API): the qemu API's start, stop
and migrate tasks and the HA manager's LRM call it. A node failure SIGKILLs its VMs' processes
(their locks stay behind, as with a dead QEMU); recovery on another node must break them, which
librbd does only once the dead client's watch has gone and with the blocklist permission
(`mon 'profile rbd'`), as on a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

from fakepve.model import TaskError
from fakepve.qemu import drives_of, volume_ref

from lab.pve import procs
from lab.pve.ha.usage import service_usage
from lab.pve.rbdstore import clean_env

LOG = logging.getLogger("lab.pve")

HOLDER = Path(__file__).with_name("holder.py")
SYSTEM_PYTHON = "/usr/bin/python3"


class Holder:
    """A running VM: the librbd client holding its disks' exclusive locks."""

    def __init__(self, vmid: int, node: str, proc: asyncio.subprocess.Process, images: list[str], pidfile: Path) -> None:
        self.vmid, self.node, self.proc, self.images, self.pidfile = vmid, node, proc, images, pidfile
        self.expected_exit = False
        self.monitor: asyncio.Task | None = None
        self.started = time.time()


class VmProcesses:
    """Mixin of LabPve: the VMs' processes (holders) and what happens to them."""

    def rbd_disks(self, vm) -> list[dict[str, str]]:
        disks = []
        for _key, volume, _props in drives_of(vm.config, skip_cdrom=True):
            sid, name = volume_ref(volume)
            store = self.storages.get(sid or "")
            if store is None or store.get("type") != "rbd":
                continue
            cli = self.ceph_access.client(sid, store)
            disks.append(dict(cli, image=name.rsplit("/", 1)[-1], storage=sid))  # a linked clone's base-N-disk-M/vm-X-disk-K: its image
        return disks

    def lab_vm_running(self, vm) -> bool:
        return vm is not None and vm.status == "running"

    def lab_node_capacity(self, node: str) -> tuple[int, int]:
        """A node's CPUs and memory (bytes), as /cluster/resources and /nodes/{node}/status show them (fakepve's)."""
        stats = self._node_stats(True)
        return int(stats["maxcpu"]), int(stats["maxmem"])

    async def lab_power_on(self, vm) -> None:
        """Start the VM's process: take its disks' locks (TaskError when that fails)."""
        if vm.start_error:
            raise TaskError(vm.start_error)
        disks = self.rbd_disks(vm)
        old = self.holders.get(vm.vmid)
        if old is not None and old.proc.returncode is None:
            if old.node == vm.node:
                vm.status = vm.qmpstatus = "running"
                return
            await self.lab_release(vm.vmid)
        if disks:
            spec = {
                "vmid": vm.vmid,
                "deadline": self.holder_deadline,
                "disks": [{k: d[k] for k in ("mon_host", "user", "keyring", "pool", "image")} for d in disks],
            }
            pidfile = self.pids_dir / f"pve-holder-vm{vm.vmid}.pid"
            with open(self.state_dir / "holders.log", "ab") as errlog:
                proc = await asyncio.create_subprocess_exec(
                    SYSTEM_PYTHON,
                    str(HOLDER),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=errlog,
                    env=clean_env(),
                    start_new_session=True,
                )
            procs.write_pid(pidfile, proc.pid)
            proc.stdin.write(json.dumps(spec).encode())
            await proc.stdin.drain()
            proc.stdin.close()
            holder = Holder(vm.vmid, vm.node, proc, [f"{d['pool']}/{d['image']}" for d in disks], pidfile)
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), self.holder_deadline + 30)
            except TimeoutError:
                line = b""
            event = {}
            with contextlib.suppress(ValueError):
                event = json.loads(line or b"{}")
            if event.get("event") != "locked":
                if proc.returncode is None:
                    proc.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5)
                pidfile.unlink(missing_ok=True)
                message = event.get("message") or f"the VM process exited (code {proc.returncode})"
                raise TaskError(f"start failed: {message}")
            self.holders[vm.vmid] = holder
            holder.monitor = asyncio.ensure_future(self._watch_holder(vm, holder))
        vm.status = vm.qmpstatus = "running"
        vm.started_at = time.time()

    async def _watch_holder(self, vm, holder: Holder) -> None:
        lines = []
        while True:
            line = await holder.proc.stdout.readline()
            if not line:
                break
            lines.append(line.decode(errors="replace").strip())
        await holder.proc.wait()
        holder.pidfile.unlink(missing_ok=True)
        if self.holders.get(holder.vmid) is holder:
            del self.holders[holder.vmid]
        if not holder.expected_exit:
            why = lines[-1] if lines else f"exit code {holder.proc.returncode}"
            LOG.warning("VM %s process on %s ended unexpectedly: %s", holder.vmid, holder.node, why)
            if vm.node == holder.node and vm.status == "running":
                vm.status = vm.qmpstatus = "stopped"
            self.ha.wake()

    async def lab_release(self, vmid: int) -> None:
        """Stop the VM's process cleanly (it releases its locks); the VM is stopped."""
        holder = self.holders.pop(vmid, None)
        vm = self.vm(vmid)
        if holder is not None and holder.proc.returncode is None:
            holder.expected_exit = True
            try:
                holder.proc.terminate()
                await asyncio.wait_for(holder.proc.wait(), 15)
            except ProcessLookupError:
                pass
            except TimeoutError:
                holder.proc.kill()
        if holder is not None:
            holder.pidfile.unlink(missing_ok=True)
        if vm is not None:
            vm.status = vm.qmpstatus = "stopped"

    def lab_kill_vm(self, vm, reason: str) -> None:
        """The VM dies with its node: SIGKILL, its locks stay behind."""
        holder = self.holders.pop(vm.vmid, None)
        if holder is not None and holder.proc.returncode is None:
            holder.expected_exit = True
            with contextlib.suppress(ProcessLookupError):
                holder.proc.kill()
            LOG.info("VM %s on %s killed (%s): pid %s", vm.vmid, holder.node, reason, holder.proc.pid)
        vm.status = vm.qmpstatus = "stopped"

    async def stop_all_holders(self, graceful: bool) -> None:
        for vmid in list(self.holders):
            if graceful:
                await self.lab_release(vmid)
            else:
                vm = self.vm(vmid)
                if vm is not None:
                    self.lab_kill_vm(vm, "lab stopped")

    def lab_steal_vm(self, vm, target: str) -> None:
        """steal_service (Env/PVE2.pm: the config file renamed to TARGET's directory, its old
        node fenced). The config, its `lock` included, moves unchanged: the CRM cleared the locks
        it may beforehand (ha/crm.py fence_recovery_cleanup)."""
        if vm is None:
            return
        if vm.status == "running":
            self.lab_kill_vm(vm, "fenced")
        vm.node = target

    async def lab_migrate(self, vm, target: str, online: bool) -> tuple[bool, str]:
        """qm migrate (QemuMigrate.pm). Offline, or a stopped VM: the config moves to TARGET. Online
        with shared storage (every disk on RBD): a live migration. PVE starts QEMU on TARGET
        incoming, copies the memory, pauses the source and resumes the guest on TARGET, whose
        librbd takes over the disks' exclusive locks (the lock is cooperative between the two
        QEMUs); the guest never stops. The lab's holder stands for the guest: it keeps running,
        the same process with the same locks, now on TARGET. The time is a model: about 2 PVE
        seconds to start QEMU on TARGET and switch over, plus the memory at 1 GiB per second."""
        running = vm.status == "running"
        started = time.time()
        holder = self.holders.get(vm.vmid)
        if running and online and holder is not None and holder.proc.returncode is None:
            vm.lock = "migrate"
            try:
                _cpus, memory = service_usage(vm.config)
                await asyncio.sleep(self.ha.secs(2 + memory / (1 << 30)))
            finally:
                vm.lock = None
            holder.node = vm.node = target
        else:
            if running:
                await self.lab_release(vm.vmid)
            vm.node = target
            if running and online:
                try:
                    await self.lab_power_on(vm)
                except TaskError as exc:
                    return False, f"migration problems: {exc}"
        took = time.strftime("%H:%M:%S", time.gmtime(time.time() - started))
        return True, f"migration finished successfully (duration {took})"
