"""/nodes/{node}/qemu/{vmid}/status/...: the power actions of qemu-server's API2/Qemu.pm (vm_start,
vm_stop, vm_shutdown, vm_reboot) on the lab's VM processes (vmproc.py), an HA-managed VM's start and
stop as a request to the HA manager (`Requesting HA start for VM <vmid>`: PVE::HA::Config
vm_is_ha_managed), and the tasks the LRM runs for its services (`qm start|stop|migrate`,
ha/lrm.py). The rest of /nodes/{node}/qemu is nodes_qemu.py.
"""

from __future__ import annotations

import asyncio

from fakepve.model import TaskError
from fakepve.routing import die, param_error

from lab.pve.api.tasks import AFTER


class NodesQemuStatusApi:
    """The power actions and the LRM's tasks; a part of the lab PVE (app.LabPve)."""

    # ------------------------------------------------------------------ power (API actions)

    async def _do_start(self, vm, user, p):
        if vm.ha_managed and not vm.template:
            return await self._ha_request(vm, user, "started")

        # QemuServer.pm vm_start (qemu-server 9.0 / 8.x): the whole start runs under
        # PVE::QemuConfig->lock_config -- the flock on /var/lock/qemu-server/lock-<vmid>.conf,
        # taken with a 10 s timeout (AbstractConfig.pm lock_config) and held until the start is
        # done; no `lock` property is written to the config. The task's config lock (fakepve's
        # task(vm=...), lock_wait 10 s) is that flock. Inside it, check_lock refuses a locked VM
        # unless skiplock (root only) or the lock is `suspended`.
        skiplock = bool(p.get("skiplock"))
        if skiplock and user != "root@pam":  # API2/Qemu.pm vm_start: $get_root_param->('skiplock')
            raise param_error(skiplock="Only root may use this option.")

        async def body():
            if vm.template:
                raise TaskError("you can't start a vm if it's a template")
            lock = vm.config.get("lock") or vm.lock
            if lock and lock != "suspended" and not skiplock:
                raise TaskError(f"VM is locked ({lock})")
            if vm.status == "running":
                raise TaskError(f"VM {vm.vmid} already running")
            await self.ceph_io(vm)
            await self.pause(vm.start_secs)
            if vm.start_error:
                raise TaskError(vm.start_error)
            vm.apply_pending()
            await self.lab_power_on(vm)
            if vm.lock == "suspended":
                vm.lock = None
                vm.config.pop("lock", None)

        return await self.task(vm.node, "qmstart", vm.vmid, user, body, vm=vm)

    async def _do_stop(self, vm, user, p):
        if not p.get("skiplock"):
            self._check_lock(vm)
        if vm.ha_managed:
            return await self._ha_request(vm, user, "stopped")

        async def body():
            await self.pause(vm.stop_secs)
            await self.lab_release(vm.vmid)

        return await self.task(vm.node, "qmstop", vm.vmid, user, body, vm=vm)

    async def _do_shutdown(self, vm, user, p):
        self._need_running(vm)
        self._check_lock(vm)
        if vm.ha_managed:
            return await self._ha_request(vm, user, "stopped")

        async def body():
            note = await self._powerdown(vm, p)
            if vm.status != "running":
                await self.lab_release(vm.vmid)
            return note

        return await self.task(vm.node, "qmshutdown", vm.vmid, user, body, vm=vm)

    async def _do_reboot(self, vm, user, p):
        """POST .../status/reboot (bpg's reboot when the guest agent is enabled). API2/Qemu.pm
        vm_reboot has no HA branch: it refuses a paused or stopped VM, then its `qmreboot` worker
        runs QemuServer.pm vm_reboot under the config flock: create_reboot_request and a guest
        shutdown (_do_vm_stop: check_lock unless skiplock -- a task error --, no forceStop: `VM
        quit/powerdown failed - got timeout`). The task ends with the VM stopped; qmeventd then runs
        `qm cleanup` (CLI/qm.pm), which finds the reboot request and calls API2/Qemu.pm vm_start:
        for an HA-managed VM that is `Requesting HA start for VM <vmid>` (`ha-manager set
        vm:<vmid> --state started`), so the requested state stays `started` all along and the
        LRM starts the VM (applying its pending changes). fakepve rebooted in one task, outside
        HA, without stopping the VM's process, and refused a locked VM in the HTTP answer."""
        if vm.qmpstatus == "paused":
            raise die("VM is paused - cannot shutdown")
        self._need_running(vm)

        requested: list[bool] = []

        async def body():
            if vm.status != "running":  # "only reboot if running, as qmeventd starts it again"
                return None
            lock = vm.config.get("lock") or vm.lock
            if lock:
                raise TaskError(f"VM is locked ({lock})")
            note = await self._powerdown(vm, p)
            requested.append(True)  # create_reboot_request, cleared again if the shutdown fails
            await self.lab_release(vm.vmid)
            return note

        async def cleanup():
            if requested:
                self.background(self._qm_cleanup_restart(vm))

        token = AFTER.set([cleanup])
        try:
            return await self.task(vm.node, "qmreboot", vm.vmid, user, body, vm=vm)
        finally:
            AFTER.reset(token)

    async def _qm_cleanup_restart(self, vm) -> None:
        """`qm cleanup` after a reboot request (CLI/qm.pm cleanup): under the config flock
        (lock_config_full, 60 s) once the reboot task released it, then `Restarting VM <vmid>`
        through API2/Qemu.pm vm_start as root@pam: the HA request for an HA-managed VM, else
        a `qmstart` task."""
        deadline = asyncio.get_running_loop().time() + max(60 * self.time_scale, 1)
        while vm.lock_holder is not None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        if self.vm(vm.vmid) is not vm or vm.status == "running":
            return
        await self._do_start(vm, "root@pam", {})

    async def _ha_request(self, vm, user, state):
        sid = f"vm:{vm.vmid}"
        verb = "start" if state == "started" else "stop"

        async def body():
            sd = self.ha.ss.get(sid)
            if sd is not None and sd.get("state") == "error":
                raise TaskError(f"service '{sid}' in error state, must be disabled and fixed first")
            if sid in self.ha.resources:
                self.ha.resources[sid]["state"] = state
                self.ha.update_vm_state(sid)
                self.ha.wake()
            return None

        return await self.task(vm.node, "ha" + verb, vm.vmid, user, body, lock=False, log=[f"Requesting HA {verb} for VM {vm.vmid}"])

    # ------------------------------------------------------------------ the LRM's qm commands

    async def _wait_task(self, upid: str) -> tuple[bool, str]:
        record = self.tasks[upid]
        while record["status"] != "stopped":
            await asyncio.sleep(0.05)
        status = record.get("exitstatus", "OK")
        return status == "OK", status

    async def lab_task_start(self, vm, node: str) -> tuple[bool, str]:
        """The LRM's `qm start` (Resources/PVEVM.pm start -> API2/Qemu.pm vm_start), under the same
        config flock as _do_start."""

        async def body():
            if vm.status == "running":
                return None
            # QemuServer.pm vm_start: PVE::QemuConfig->check_lock unless skiplock or `suspended`
            # (Resources/PVEVM.pm start passes no skiplock): `VM is locked (create)`
            lock = vm.config.get("lock") or vm.lock
            if lock and lock != "suspended":
                raise TaskError(f"VM is locked ({lock})")
            # the start takes its time under the flock, as the API's start does (_do_start)
            await self.pause(vm.start_secs)
            # QemuServer.pm vm_start_nolock: pending changes are applied before QEMU starts
            # (`vmconfig_apply_pending` unless a statefile/resume), whoever runs the start: an HA
            # VM changed while running (bpg: PUT config, then status/stop + status/start through
            # HA) gets them on the LRM's start
            vm.apply_pending()
            await self.lab_power_on(vm)
            return None

        return await self._wait_task(await self.task(node, "qmstart", vm.vmid, "root@pam", body, vm=vm))

    async def lab_task_stop(self, vm, node: str) -> tuple[bool, str]:
        async def body():
            await self.lab_release(vm.vmid)

        return await self._wait_task(await self.task(node, "qmstop", vm.vmid, "root@pam", body, vm=vm))

    async def lab_task_migrate(self, vm, node: str, target: str, online: bool) -> tuple[bool, str]:
        async def body():
            lock = vm.config.get("lock") or vm.lock
            if lock:  # QemuMigrate.pm prepare: PVE::QemuConfig->check_lock
                raise TaskError(f"VM is locked ({lock})")
            ok, message = await self.lab_migrate(vm, target, online)
            if not ok:
                raise TaskError(message)
            return message

        kind = "qmigrate"
        return await self._wait_task(
            await self.task(
                node, kind, vm.vmid, "root@pam", body, vm=vm, log=[f"starting migration of VM {vm.vmid} to node '{target}' ({self.node_addr[target]})"]
            )
        )
