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
            return "\n".join(notes) if notes else None

        return await super().task(node, ttype, tid, user, wrapped, vm=vm, lock=lock, log=log)

    def _ops(self) -> list:
        ops = OPS.get()
        if ops is None:
            LOG.warning("Ceph work outside a task: done in the background")
            ops = []
            self.background(self._run_ops(ops, []))
        return ops

    async def _run_ops(self, ops: list, notes: list[str]) -> None:
        """Do the pending Ceph work: creates (raise TaskError), then removals (warn)."""
        while ops:
            op = ops.pop(0)
            kind, sid, name = op[0], op[1], op[2]
            store = self.storages.get(sid) or op[-1]
            try:
                if kind == "create":
                    await self.ceph_access.create_image(sid, store, name, op[3])
                elif kind == "remove":
                    await self.ceph_access.remove_image(sid, store, name)
            except RbdError as exc:
                if kind == "create":
                    ops[:] = [o for o in ops if o[0] != "create"]
                    raise TaskError(str(exc)) from None
                notes.append(f"Could not remove disk '{sid}:{name}', check manually: {exc}")

    async def ceph_io(self, vm, keys=None):
        await super().ceph_io(vm, keys)
        ops = OPS.get()
        if ops:
            creates = [o for o in ops if o[0] == "create"]
            for op in creates:
                ops.remove(op)
            await self._run_ops(creates, [])
