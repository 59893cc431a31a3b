"""/nodes/{node}/tasks: the task life cycle, as fakepve runs it after PVE (a UPID
`UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`, `status` running|stopped,
`exitstatus` OK or the error, the log ending in `TASK OK` / `TASK ERROR: ...`), with the Ceph
work of the lab's tasks: a task collects the RBD images its body allocates (created before the
body goes on, in ceph_io) and frees (removed once it ends, a failed removal is the warning
`Could not remove disk '<volid>', check manually: ...` of qemu-server's destroy_vm).

The routes (list, status, log) are fakepve's own (fakepve/server.py _task_list/_task_status/
_task_log); this module is the lab's side of running them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from fakepve.model import TaskError

from lab.pve.rbdstore import RbdError

LOG = logging.getLogger("lab.pve")

# The task being run (its body) collects Ceph work here: images to create before the body
# goes on (flushed by ceph_io) and images to remove once it ends.
OPS: contextvars.ContextVar[list | None] = contextvars.ContextVar("lab_pve_ops", default=None)
# Callbacks a handler wants run when the task it starts ends well (set around super() calls).
AFTER: contextvars.ContextVar[list | None] = contextvars.ContextVar("lab_pve_after", default=None)
# Checks a handler wants run inside the task, under its config lock, before the body (a check
# raising TaskError fails the task): PVE handlers that repeat their checks once they hold the lock.
BEFORE: contextvars.ContextVar[list | None] = contextvars.ContextVar("lab_pve_before", default=None)


class TasksApi:
    """Mixin of LabPve: tasks that do real Ceph work."""

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        after, before = AFTER.get(), BEFORE.get()
        if after is not None:
            AFTER.set(None)
        if before is not None:
            BEFORE.set(None)

        upid_of: dict[str, str] = {}

        async def wrapped():
            for check in before or []:
                await check()
            ops: list = []
            token = OPS.set(ops)
            notes: list[str] = []
            try:
                note = await body()
            except TaskError:
                await self._run_ops(ops, notes)
                raise
            finally:
                OPS.reset(token)
            if note:
                notes.append(note)
            await self._run_ops(ops, notes)
            for callback in after or []:
                extra = await callback()
                if extra:
                    notes.append(extra)
            warned = sum(1 for note in notes for line in note.splitlines() if line.startswith("WARN: "))
            if warned:
                # fakepve ends the task `OK` once this returns, without awaiting again; PVE's worker
                # counts its warnings (pve-common RESTEnvironment fork_worker: `WARN: <message>`
                # lines, then `TASK WARNINGS: <n>`, exit status `WARNINGS: <n>`)
                asyncio.get_running_loop().call_soon(self._task_warned, upid_of, warned)
            return "\n".join(notes) if notes else None

        upid = await super().task(node, ttype, tid, user, wrapped, vm=vm, lock=lock, log=log)
        upid_of["upid"] = upid
        return upid

    def _task_warned(self, upid_of: dict[str, str], warned: int) -> None:
        record = self.tasks.get(upid_of.get("upid", ""))
        if record is not None and record.get("exitstatus") == "OK":
            record["exitstatus"] = f"WARNINGS: {warned}"
            if record["log"] and record["log"][-1] == "TASK OK":
                record["log"][-1] = f"TASK WARNINGS: {warned}"

    def _ops(self) -> list:
        ops = OPS.get()
        if ops is None:
            LOG.warning("Ceph work outside a task: done in the background")
            ops = []
            self.background(self._run_ops(ops, []))
        return ops

    async def _run_ops(self, ops: list, notes: list[str]) -> None:
        """Do the pending Ceph work in order: what a task makes (an image, a template's base image,
        a linked clone, a full clone's data, an imported file's data: a failure is the task's error, TaskError, and the
        later work of that kind is dropped), and what it frees (a failure is a warning, as
        qemu-server's destroy_vm warns `Could not remove disk ..., check manually`)."""
        while ops:
            op = ops.pop(0)
            kind, sid, name = op[0], op[1], op[2]
            store = self.storages.get(sid) or op[-1]
            try:
                if kind == "create":
                    await self.ceph_access.create_image(sid, store, name, op[3])
                elif kind == "create_base":
                    await self.ceph_access.create_base(sid, store, name)
                elif kind == "clone":
                    await self.ceph_access.clone_image(sid, store, name, op[3])
                elif kind == "copy":
                    await self.ceph_access.copy_data(sid, store, name, op[3])
                elif kind == "import":
                    await self.ceph_access.import_data(sid, store, name, op[3])
                elif kind == "remove":
                    await self._free_image(sid, store, name)
            except RbdError as exc:
                if kind != "remove":
                    ops[:] = [o for o in ops if o[0] == "remove"]
                    raise TaskError(str(exc)) from None
                notes.append(f"WARN: Could not remove disk '{sid}:{name}', check manually: {exc}")

    async def _free_image(self, sid: str, store: dict, volname: str) -> None:
        """PVE::Storage::vdisk_free of an RBD volume: a base image a linked clone still uses is
        refused (volume_is_base_and_used: `base volume '<name>' is still in use by linked clones`,
        asked of the pool itself), else the image goes (RBDPlugin free_image)."""
        image = volname.rsplit("/", 1)[-1]
        if image.startswith("base-") and any(name.startswith(f"{image}/") for name in await self.ceph_access.list_images(sid, store)):
            raise RbdError(f"base volume '{image}' is still in use by linked clones")
        await self.ceph_access.remove_image(sid, store, image)

    async def ceph_io(self, vm, keys=None):
        await super().ceph_io(vm, keys)
        ops = OPS.get()
        if ops:
            creates = [o for o in ops if o[0] == "create"]
            for op in creates:
                ops.remove(op)
            await self._run_ops(creates, [])
