"""The lab's Proxmox VE API: fakepve (pinned), extended with what a PVE cluster on external
Ceph does and fakepve does not. Lab only: fakepve is AGPL-3.0 and the product never imports
it (nor this module).

One process serves the 3-node cluster: every node's API on its own address (a powered-off
or isolated node's listener is closed, the others keep serving), one shared cluster state,
and a control channel (plain HTTP on loopback) for faults, mode, time scale and injected
API failures. Run by `lab.pve.start()`:

    python -m lab.pve.server --config <state>/pve/config.json

What fakepve gets here (see compat.py for the hooks overridden, checked by the tests):
- stateful HA (ha_api.py) and an HA manager with fencing and recovery (ha.py);
- RBD storages checked against the real Ceph with the storage's monhost, user and keyring
  (rbdstore.py); `shared: 1` for rbd as PVE reports it; the keyring kept apart (0400),
  never logged;
- VM disks on RBD storages are real images: created by VM create, config updates and
  POST .../content, resized by PUT .../resize, removed with the VM or the volume;
- a started VM holds its disks' exclusive locks through a real librbd client (holder.py),
  one process per VM; a node failure SIGKILLs them, recovery elsewhere must break the locks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import os
import re
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import fakepve
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from fakepve import FakePve
from fakepve import errors as fake_errors
from fakepve.lxc import SIZE_UNITS, format_size
from fakepve.model import PveError, TaskError
from fakepve.qemu import DRIVE_KEY, NEW_DISK, drives_of, is_cdrom, join_drive, split_drive, volume_ref
from fakepve.routing import die, param_error

from lab.pve import procs
from lab.pve.ha import HaManager
from lab.pve.ha_api import HaApi
from lab.pve.rbdstore import CephAccess, RbdError, clean_env

LOG = logging.getLogger("lab.pve")

FAKEPVE_VERSION = "0.5.0"
VERSIONS = {"rules": ("9.0.10", "9.0"), "groups": ("8.4.1", "8.4")}
HOLDER = Path(__file__).with_name("holder.py")
SYSTEM_PYTHON = "/usr/bin/python3"

# The task being run (its body) collects Ceph work here: images to create before the body
# goes on (flushed by ceph_io) and images to remove once it ends.
_OPS: contextvars.ContextVar[list | None] = contextvars.ContextVar("lab_pve_ops", default=None)
# Callbacks a handler wants run when the task it starts ends well (set around super() calls).
_AFTER: contextvars.ContextVar[list | None] = contextvars.ContextVar("lab_pve_after", default=None)
# The node whose address the current request came in on.
_LOCAL: contextvars.ContextVar[str | None] = contextvars.ContextVar("lab_pve_local", default=None)

REDACT = re.compile(rb"(?<![^&])(keyring=)[^&]*")


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings (a key must never reach a log)."""

    def log(self, request, response, time_taken):
        self.logger.info("%s %s %s %s %.3fs", request.remote, request.method, request.path, response.status, time_taken)


class Holder:
    """A running VM: the librbd client holding its disks' exclusive locks."""

    def __init__(self, vmid: int, node: str, proc: asyncio.subprocess.Process, images: list[str], pidfile: Path) -> None:
        self.vmid, self.node, self.proc, self.images, self.pidfile = vmid, node, proc, images, pidfile
        self.expected_exit = False
        self.monitor: asyncio.Task | None = None
        self.started = time.time()


class LabPve(HaApi, FakePve):
    def __init__(self, config: dict[str, Any]) -> None:
        self.node_addr: dict[str, str] = dict(config["nodes"])
        first = next(iter(self.node_addr.values()))
        super().__init__(user="root@pam", password=config["password"], host=first, port=config.get("port", 8006))
        self.config = config
        self.state_dir = Path(config["state_dir"])
        self.pids_dir = Path(config["pids_dir"])
        self.nodes = {n: {"online": True} for n in self.node_addr}
        self.power: dict[str, str] = {n: "on" for n in self.node_addr}
        self.cluster_name = config.get("cluster_name", "pve-lab")
        self.apitokens[config["token_id"]] = config["token_secret"]
        self.mode = "rules"
        self.set_mode(config.get("mode", "rules"))
        self.time_scale = float(config.get("time_scale", 0.1))
        self.lock_wait = 10
        self.max_requests = 2000
        self.ceph_access = CephAccess(self.state_dir, fake=bool(config.get("fake_ceph")))
        self.holder_deadline = float(config.get("lock_wait", 90))
        self.holders: dict[int, Holder] = {}
        self.hangs: dict[tuple[str, str], dict[str, Any]] = {}
        self.sites: dict[str, web.TCPSite] = {}
        self.ssl_ctx: ssl.SSLContext | None = None
        self.ha = HaManager(self)
        self.control_runner: web.AppRunner | None = None
        self.started_wall = time.time()
        self._background: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ basics

    @property
    def node_names(self) -> list[str]:
        return list(self.node_addr)

    def background(self, coro) -> None:
        """Run CORO without waiting for it (a reference is kept until it ends)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def current_node(self) -> str:
        return _LOCAL.get() or self.node_names[0]

    def set_mode(self, mode: str) -> None:
        if mode not in VERSIONS:
            raise ValueError(f"mode must be one of {', '.join(VERSIONS)}")
        previous = getattr(self, "mode", None)
        self.mode = mode
        self.version, self.release_version = VERSIONS[mode]
        if previous == "groups" and mode == "rules" and getattr(self, "ha", None) is not None:
            self.ha.migrate_groups_to_rules()

    def local_node_of(self, request) -> str | None:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        addr = sock[0] if sock else None
        for node, node_addr in self.node_addr.items():
            if node_addr == addr:
                return node
        return None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, certfile, keyfile):
        """Listen on every node's address (fakepve listens on one)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certfile, keyfile)
        self.ssl_ctx = ctx
        self.runner = web.AppRunner(self._build_app(), access_log_class=PathOnlyAccessLogger, access_log=logging.getLogger("lab.pve.access"))
        await self.runner.setup()
        for node in self.node_names:
            await self.open_listener(node)
        self.ha.start()

    async def open_listener(self, node: str) -> None:
        if node in self.sites:
            return
        site = web.TCPSite(self.runner, self.node_addr[node], self.port, ssl_context=self.ssl_ctx, reuse_address=True)
        await site.start()
        self.sites[node] = site

    async def close_listener(self, node: str) -> None:
        site = self.sites.pop(node, None)
        if site is not None:
            await site.stop()
        addr = self.node_addr[node]
        server = getattr(self.runner, "server", None)
        for _handler, transport in list(getattr(server, "_connections", {}).items()):
            try:
                sock = transport.get_extra_info("sockname")
            except Exception:
                continue
            if sock and sock[0] == addr:
                transport.close()

    async def stop(self):
        await self.ha.stop()
        await self.stop_all_holders(graceful=True)
        if self.control_runner is not None:
            await self.control_runner.cleanup()
        await super().stop()

    # ------------------------------------------------------------------ middleware hooks

    async def _answer(self, request, handler, generic, path_node):
        local = self.local_node_of(request)
        if local is not None and self.power.get(local) != "on":
            # the node is down: its address does not answer (a late request on a kept-alive
            # connection is dropped the same way)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)
        _LOCAL.set(local)
        for key, rule in list(self.hangs.items()):
            if request.method != key[0] or not self._failure_matches(request, generic, key[1]):
                continue
            if rule["times"] is not None:
                rule["times"] -= 1
                if rule["times"] <= 0:
                    del self.hangs[key]
            await asyncio.sleep(rule["hang"])
            break
        return await super()._answer(request, handler, generic, path_node)

    def _record(self, request, body):
        if body and request.content_type != "application/json":
            body = REDACT.sub(rb"\g<1>***", body)
        elif body and b"keyring" in body:
            try:
                data = json.loads(body)
                if isinstance(data, dict) and "keyring" in data:
                    data["keyring"] = "***"
                    body = json.dumps(data).encode()
            except ValueError:
                body = b""
        return super()._record(request, body)

    # ------------------------------------------------------------------ cluster views

    async def _version(self, request):
        from fakepve.server import ok

        return ok({"version": self.version, "release": self.release_version, "repoid": "c3c7c6d5b2a3e4f1" if self.mode == "rules" else "2a5fa54a8503f96d"})

    async def _cluster_status(self, request):
        from fakepve.server import ok

        local = self.local_node_of(request) or self.node_names[0]
        online = [n for n in self.node_names if self.nodes[n].get("online", True)]
        data = [
            {
                "type": "cluster",
                "id": "cluster",
                "name": self.cluster_name,
                "nodes": len(self.node_names),
                "quorate": 1 if self.quorate else 0,
                "version": len(self.node_names),
            }
        ]
        for idx, name in enumerate(self.node_names, 1):
            data.append(
                {
                    "type": "node",
                    "id": "node/" + name,
                    "name": name,
                    "nodeid": idx,
                    "level": "",
                    "ip": self.node_addr[name],
                    "online": 1 if name in online else 0,
                    "local": 1 if name == local else 0,
                }
            )
        return ok(data)

    async def _resources(self, request):
        for name, store in self.storages.items():
            if store.get("type") == "rbd" and self.ceph_access.stale(name):
                self.background(self._rbd_status(name))
        return await super()._resources(request)

    # ------------------------------------------------------------------ tasks and Ceph work

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        after = _AFTER.get()
        if after is not None:
            _AFTER.set(None)

        async def wrapped():
            ops: list = []
            token = _OPS.set(ops)
            notes: list[str] = []
            try:
                note = await body()
            except TaskError:
                await self._run_ops(ops, notes)
                raise
            finally:
                _OPS.reset(token)
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
        ops = _OPS.get()
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
        ops = _OPS.get()
        if ops:
            creates = [o for o in ops if o[0] == "create"]
            for op in creates:
                ops.remove(op)
            await self._run_ops(creates, [])

    def _qm_alloc(self, sid, vmid, fmt, size, linked_from=None):
        volid, fmt = super()._qm_alloc(sid, vmid, fmt, size, linked_from)
        store = self.storages.get(sid)
        if store is not None and store.get("type") == "rbd":
            self._ops().append(("create", sid, volid.split(":", 1)[1], size, dict(store)))
        return volid, fmt

    def _qm_free(self, volid):
        sid, name = volume_ref(str(volid))
        store = self.storages.get(sid) if sid else None
        super()._qm_free(volid)
        if store is not None and store.get("type") == "rbd":
            self._ops().append(("remove", sid, name, dict(store)))

    # ------------------------------------------------------------------ RBD storages

    async def _rbd_status(self, sid: str, refresh: bool = False) -> dict[str, Any] | None:
        store = self.storages.get(sid)
        if store is None or store.get("type") != "rbd":
            return None
        status = await self.ceph_access.status(sid, store, refresh=refresh)
        if sid in self.storages:
            self.storages[sid]["active"] = status["active"]
        return status

    async def _rbd_sync(self, sid: str) -> None:
        """Make the storage's volumes what the pool holds (PVE lists the pool, not a cache)."""
        store = self.storages.get(sid)
        if store is None or store.get("type") != "rbd":
            return
        try:
            images = await self.ceph_access.list_images(sid, store)
        except RbdError as exc:
            raise die(str(exc)) from None
        volumes = store.setdefault("volumes", {})
        for name in list(volumes):
            if name not in images:
                del volumes[name]
        for name, size in images.items():
            found = re.match(r"^(?:base|vm|subvol)-(\d+)-", name)
            if found is None:
                continue
            if name in volumes:
                volumes[name]["size"] = size
            else:
                volumes[name] = {"content": "images", "format": "raw", "size": size, "vmid": int(found.group(1)), "ctime": int(time.time())}

    async def _sc_create(self, v, user):
        keyring = v.get("keyring")
        result = await super()._sc_create(v, user)
        sid = v["storage"]
        if v.get("type") == "rbd":
            self.storages[sid]["shared"] = 1
            if keyring:
                self.ceph_access.write_keyring(sid, keyring)
            else:
                self.ceph_access.remove_keyring(sid)
            self.storages[sid]["active"] = 0
            self.background(self._rbd_status(sid, refresh=True))
        return result

    async def _sc_update(self, v, user):
        keyring = v.get("keyring")
        result = await super()._sc_update(v, user)
        sid = v["storage"]
        if self.storages.get(sid, {}).get("type") == "rbd":
            if keyring:
                self.ceph_access.write_keyring(sid, keyring)
            self.ceph_access.forget(sid)
            self.background(self._rbd_status(sid, refresh=True))
        return result

    async def _sc_delete(self, v, user):
        result = await super()._sc_delete(v, user)
        self.ceph_access.remove_keyring(v["storage"])
        return result

    async def _ns_list(self, v, user):
        rbd = [n for n, s in self.storages.items() if s.get("type") == "rbd"]
        if rbd:
            await asyncio.gather(*(self._rbd_status(n) for n in rbd))
        return await super()._ns_list(v, user)

    async def _ns_status(self, v, user):
        await self._rbd_status(v["storage"])
        return await super()._ns_status(v, user)

    def _status_item(self, name, node, formats=False):
        item = super()._status_item(name, node, formats)
        store = self.storages[name]
        if store.get("type") == "rbd":
            status = self.ceph_access.cached_status(name)
            if status is not None and item["active"] and status["active"]:
                item.update(total=status["total"], used=status["used"], avail=status["avail"])
        return item

    def _active_store(self, name, node):
        store = self._check_enabled(name, node)
        if store.get("type") == "rbd":
            status = self.ceph_access.cached_status(name)
            if status is not None and not status["active"]:
                raise die(f"rbd error: {status['reason']}")
        return super()._active_store(name, node)

    async def _content_list(self, v, user):
        if self.storages.get(v["storage"], {}).get("type") == "rbd":
            await self._rbd_status(v["storage"])
            self._check_enabled(v["storage"], v["node"])
            await self._rbd_sync(v["storage"])
        return await super()._content_list(v, user)

    async def _content_info(self, v, user):
        sid = v.get("storage") or str(v.get("volume", "")).partition(":")[0]
        if self.storages.get(sid, {}).get("type") == "rbd":
            await self._rbd_sync(sid)
        return await super()._content_info(v, user)

    async def _content_create(self, v, user):
        sid = v["storage"]
        if self.storages.get(sid, {}).get("type") != "rbd":
            return await super()._content_create(v, user)
        await self._rbd_status(sid)
        await self._rbd_sync(sid)
        volid = await super()._content_create(v, user)
        name = volid.split(":", 1)[1]
        store = self.storages[sid]
        size = int(store["volumes"][name]["size"])
        try:
            await self.ceph_access.create_image(sid, store, name, size)
        except RbdError as exc:
            store["volumes"].pop(name, None)
            raise die(str(exc)) from None
        return volid

    async def _content_delete(self, v, user):
        volume, sid = str(v["volume"]), v.get("storage")
        if ":" in volume:
            sid, volume = volume.split(":", 1)
        store = self.storages.get(sid or "")
        if store is None or store.get("type") != "rbd":
            return await super()._content_delete(v, user)
        snapshot = dict(store)

        async def remove():
            try:
                existed = await self.ceph_access.remove_image(sid, snapshot, volume)
            except RbdError as exc:
                raise TaskError(str(exc)) from None
            return None if existed else f"volume '{sid}:{volume}' did not exist in the pool"

        token = _AFTER.set([remove])
        try:
            return await super()._content_delete(v, user)
        finally:
            _AFTER.reset(token)

    # ------------------------------------------------------------------ VM create, config, destroy

    def _rbd_targets(self, params: dict[str, Any], default: str | None) -> set[str]:
        out = set()
        for key, value in params.items():
            if not DRIVE_KEY.match(key):
                continue
            volume, props = split_drive(str(value))
            found = NEW_DISK.match(volume or "")
            sid = (found.group(1) or default) if found else volume_ref(volume or "")[0]
            if sid and self.storages.get(sid, {}).get("type") == "rbd":
                out.add(sid)
        return out

    async def _qm_create(self, v, user):
        for sid in self._rbd_targets(v, v.get("storage")):
            await self._rbd_status(sid)
            with contextlib.suppress(PveError):  # the allocation in the task fails with rbd's error, as on PVE
                await self._rbd_sync(sid)
        start = str(v.pop("start", "0")).lower() in ("1", "true")
        ha_managed = str(v.pop("ha-managed", "0")).lower() in ("1", "true")
        vmid = int(v["vmid"])

        async def after():
            vm = self.vm(vmid)
            if vm is None:
                return None
            if ha_managed:
                self.ha.resources[f"vm:{vmid}"] = {"type": "vm", "state": "started" if start else "stopped"}
                self.ha.update_vm_state(f"vm:{vmid}")
                self.ha.wake()
                return None
            if start:
                await self.lab_power_on(vm)
            return None

        token = _AFTER.set([after])
        try:
            return await super()._qm_create(v, user)
        finally:
            _AFTER.reset(token)

    async def _qm_destroy(self, v, user):
        vmid = int(v["vmid"])
        sid = f"vm:{vmid}"
        purge = str(v.get("purge", "0")).lower() in ("1", "true")

        async def after():
            if purge and sid in self.ha.resources:
                del self.ha.resources[sid]
                self.ha.purge_rules(sid)
                self.ha.service_removed(sid)
            await self.lab_release(vmid)
            return None

        vm = self.vm(vmid)
        if vm is not None:
            for store_id in {volume_ref(vol)[0] for _k, vol, _p in drives_of(vm.config)}:
                if store_id and self.storages.get(store_id, {}).get("type") == "rbd":
                    await self._rbd_sync(store_id)
        token = _AFTER.set([after])
        try:
            return await super()._qm_destroy(v, user)
        finally:
            _AFTER.reset(token)

    async def _apply_config(self, vm, user, p):
        """fakepve keeps `scsi1: ceph-rbd:4` as written; PVE allocates the disk first."""
        p = dict(p)
        for key in sorted(k for k in p if DRIVE_KEY.match(k)):
            volume, props = split_drive(str(p[key]))
            found = NEW_DISK.match(volume or "")
            if not found or is_cdrom(volume, props):
                continue
            sid = found.group(1)
            if not sid:
                raise die("no storage ID specified (and no default storage)")
            self._qm_image_store(sid, user)
            if self.storages[sid].get("type") == "rbd":
                await self._rbd_status(sid)
                await self._rbd_sync(sid)
            size = int(float(found.group(2)) * SIZE_UNITS["G"])
            props = dict(props)
            ops: list = []
            token = _OPS.set(ops)
            try:
                volid, _fmt = self._qm_alloc(sid, vm.vmid, props.pop("format", None), size)
            finally:
                _OPS.reset(token)
            try:
                await self._run_ops(ops, [])
            except TaskError as exc:
                super()._qm_free(volid)
                raise die(str(exc)) from None
            props["size"] = format_size(size)
            p[key] = join_drive(volid, props)
        return await super()._apply_config(vm, user, p)

    # ------------------------------------------------------------------ extra VM routes

    def _routes_lab(self):
        one = "/nodes/{node}/qemu/{vmid}"
        return [("PUT", one + "/resize", self._qm_resize), ("POST", one + "/migrate", self._qm_migrate)]

    async def _qm_resize(self, v, user):
        vm = self.find(v["node"], v["vmid"])
        self.require(user, f"/vms/{vm.vmid}", "VM.Config.Disk")
        disk, size = v["disk"], str(v["size"])
        found = re.fullmatch(r"(\+)?(\d+(?:\.\d+)?)([KMGT])?", size)
        if not found:
            raise param_error(size=f"unable to parse size '{size}'")
        if v.get("digest") and v["digest"] != vm.digest():
            raise die("checksum mismatch (file change by other user?)")
        self.need_quorum()

        async def body():
            if vm.lock and not v.get("skiplock"):
                raise TaskError(f"VM is locked ({vm.lock})")
            value = vm.config.get(disk)
            if value is None:
                raise TaskError(f"disk '{disk}' does not exist")
            volume, props = split_drive(str(value))
            if is_cdrom(volume, props):
                raise TaskError("you can't resize a cdrom")
            sid, name = volume_ref(volume)
            store = self.storages.get(sid or "")
            current = 0
            if store is not None:
                vol = self._volumes(sid).get(name) or {}
                current = int(vol.get("size") or 0)
            if not current and props.get("size"):
                unit = props["size"][-1:]
                current = int(float(props["size"].rstrip("KMGT")) * SIZE_UNITS.get(unit, 1))
            amount = int(float(found.group(2)) * SIZE_UNITS.get(found.group(3) or "", 1))
            new = current + amount if found.group(1) else amount
            if new < current:
                raise TaskError("shrinking disks is not supported")
            if new == current:
                return f"skip resize: '{disk}' is already {format_size(current)}"
            if store is not None and store.get("type") == "rbd":
                try:
                    await self.ceph_access.resize_image(sid, store, name, new)
                except RbdError as exc:
                    raise TaskError(str(exc)) from None
            if store is not None and name in store.get("volumes", {}):
                store["volumes"][name]["size"] = new
            props["size"] = format_size(new)
            vm.config[disk] = join_drive(volume, props)
            return None

        return await self.task(vm.node, "resize", vm.vmid, user, body, vm=vm, log=[f"resize disk '{disk}' to {size}"])

    async def _qm_migrate(self, v, user):
        vm = self.find(v["node"], v["vmid"])
        self.require(user, f"/vms/{vm.vmid}", "VM.Migrate")
        target = v["target"]
        if target == vm.node:
            raise die("target is local node.")
        if target not in self.nodes:
            raise die(f"no such cluster node '{target}'")
        if not self.nodes[target].get("online", True):
            raise die(f"target node '{target}' is not online")
        self.need_quorum()
        online = str(v.get("online", "0")).lower() in ("1", "true")
        if vm.ha_managed:
            sid = f"vm:{vm.vmid}"

            async def hamigrate():
                sd = self.ha.ss.get(sid)
                if sd is not None:
                    sd["cmd"] = ("migrate", target)
                self.ha.wake()

            return await self.task(
                vm.node, "hamigrate", vm.vmid, user, hamigrate, lock=False, log=[f"Requesting HA migration for VM {vm.vmid} to node {target}"]
            )
        if vm.status == "running" and not online:
            raise die("can't migrate running VM without --online")

        async def body():
            ok, message = await self.lab_migrate(vm, target, online)
            if not ok:
                raise TaskError(message)
            return message

        return await self.task(
            vm.node, "qmigrate", vm.vmid, user, body, vm=vm, log=[f"starting migration of VM {vm.vmid} to node '{target}' ({self.node_addr[target]})"]
        )

    # ------------------------------------------------------------------ power (API actions)

    async def _do_start(self, vm, user, p):
        if vm.ha_managed and not vm.template:
            return await self._ha_request(vm, user, "started")

        async def body():
            if vm.template:
                raise TaskError("you can't start a vm if it's a template")
            if vm.lock and vm.lock != "suspended":
                raise TaskError(f"VM is locked ({vm.lock})")
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

    # ------------------------------------------------------------------ VM processes (holders)

    def rbd_disks(self, vm) -> list[dict[str, str]]:
        disks = []
        for _key, volume, _props in drives_of(vm.config, skip_cdrom=True):
            sid, name = volume_ref(volume)
            store = self.storages.get(sid or "")
            if store is None or store.get("type") != "rbd":
                continue
            cli = self.ceph_access.client(sid, store)
            disks.append(dict(cli, image=name, storage=sid))
        return disks

    def lab_vm_running(self, vm) -> bool:
        return vm is not None and vm.status == "running"

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
        """steal_service: the VM's config moves to TARGET (its old node is fenced)."""
        if vm is None:
            return
        if vm.status == "running":
            self.lab_kill_vm(vm, "fenced")
        vm.node = target
        vm.lock = None
        vm.config.pop("lock", None)

    async def lab_migrate(self, vm, target: str, online: bool) -> tuple[bool, str]:
        running = vm.status == "running"
        started = time.time()
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

    async def _wait_task(self, upid: str) -> tuple[bool, str]:
        record = self.tasks[upid]
        while record["status"] != "stopped":
            await asyncio.sleep(0.05)
        status = record.get("exitstatus", "OK")
        return status == "OK", status

    async def lab_task_start(self, vm, node: str) -> tuple[bool, str]:
        async def body():
            if vm.status == "running":
                return None
            await self.lab_power_on(vm)
            return None

        return await self._wait_task(await self.task(node, "qmstart", vm.vmid, "root@pam", body, vm=vm))

    async def lab_task_stop(self, vm, node: str) -> tuple[bool, str]:
        async def body():
            await self.lab_release(vm.vmid)

        return await self._wait_task(await self.task(node, "qmstop", vm.vmid, "root@pam", body, vm=vm))

    async def lab_task_migrate(self, vm, node: str, target: str, online: bool) -> tuple[bool, str]:
        async def body():
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

    # ------------------------------------------------------------------ faults

    async def fault(self, node: str, action: str) -> dict[str, Any]:
        if node not in self.node_addr:
            raise ValueError(f"unknown node {node!r}: use one of {', '.join(self.node_names)}")
        if action == "poweroff":
            self.power[node] = "off"
            self.nodes[node]["online"] = False
            await self.close_listener(node)
            for vm in list(self.vms):
                if vm.node == node and vm.status == "running":
                    self.lab_kill_vm(vm, "node powered off")
            self.ha.log(node, "systemd-logind", "info", "Power key pressed short. Powering off...")
        elif action == "isolate":
            self.power[node] = "isolated"
            self.nodes[node]["online"] = False
            await self.close_listener(node)
            self.ha.log(node, "corosync", "notice", "[TOTEM ] A processor failed, forming new configuration.")
        elif action == "restore":
            was = self.power[node]
            self.power[node] = "on"
            self.nodes[node]["online"] = True
            await self.open_listener(node)
            self.ha.log(node, "corosync", "notice", f"[QUORUM] Members rejoined ({was} -> on)")
        else:
            raise ValueError(f"unknown action {action!r}: use poweroff, isolate or restore")
        self.quorate = self.ha.quorate()
        self.ha.wake()
        return {"node": node, "action": action, "power": self.power[node], "quorate": self.quorate}


# ---------------------------------------------------------------------- control channel


def _json(data: Any = None, status: int = 200, error: str | None = None) -> web.Response:
    body = {"data": data} if error is None else {"error": error}
    return web.json_response(body, status=status)


def control_app(pve: LabPve) -> web.Application:
    routes = web.RouteTableDef()
    sshd_stops: dict[str, asyncio.Task] = {}

    async def body_of(request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text=json.dumps({"error": "body is not JSON"}), content_type="application/json") from None
        return data if isinstance(data, dict) else {}

    def need_node(value: Any) -> str:
        if value not in pve.node_addr:
            raise web.HTTPBadRequest(text=json.dumps({"error": f"unknown node {value!r}"}), content_type="application/json")
        return value

    @routes.get("/ping")
    async def ping(request):
        return _json(True)

    @routes.get("/status")
    async def status(request):
        nodes = {}
        for n, addr in pve.node_addr.items():
            nodes[n] = {
                "address": addr,
                "power": pve.power[n],
                "online": bool(pve.nodes[n].get("online", True)),
                "listening": n in pve.sites,
                "ha_node_state": pve.ha.node_status.get(n),
            }
        services = {sid: dict(sd, cmd=None) for sid, sd in pve.ha.ss.items()}
        return _json(
            {
                "nodes": nodes,
                "mode": pve.mode,
                "version": pve.version,
                "time_scale": pve.time_scale,
                "quorate": pve.quorate,
                "master": pve.ha.master,
                "services": services,
                "vms": {vm.vmid: {"node": vm.node, "status": vm.status, "hastate": vm.ha_state} for vm in pve.vms},
                "fakepve": fakepve.__version__,
            }
        )

    @routes.post("/fault")
    async def fault(request):
        data = await body_of(request)
        node = need_node(data.get("node"))
        try:
            result = await pve.fault(node, data.get("action"))
        except ValueError as exc:
            return _json(error=str(exc), status=400)
        if data.get("sshd") and pve.config.get("manage_sshd"):
            loop = asyncio.get_running_loop()
            pending = sshd_stops.pop(node, None)
            if pending is not None:  # let a pending stop finish first: the last request wins
                with contextlib.suppress(Exception):
                    await pending
            if data.get("action") == "restore":
                await loop.run_in_executor(None, _sshd_fault, node, "restore")
            else:

                async def stop_later():
                    await asyncio.sleep(0.3)  # after answering: a `poweroff` typed on the node loses its session
                    await loop.run_in_executor(None, _sshd_fault, node, "stop")

                sshd_stops[node] = asyncio.ensure_future(stop_later())
        return _json(result)

    @routes.post("/mode")
    async def mode(request):
        data = await body_of(request)
        try:
            pve.set_mode(str(data.get("mode")))
        except ValueError as exc:
            return _json(error=str(exc), status=400)
        return _json({"mode": pve.mode, "version": pve.version})

    @routes.post("/time-scale")
    async def time_scale(request):
        data = await body_of(request)
        try:
            scale = float(data.get("time_scale"))
        except (TypeError, ValueError):
            return _json(error="time_scale must be a number", status=400)
        if scale < 0:
            return _json(error="time_scale must be >= 0", status=400)
        pve.time_scale = scale
        pve.ha.wake()
        return _json({"time_scale": scale})

    @routes.post("/fail")
    async def fail(request):
        data = await body_of(request)
        method, path = str(data.get("method", "")).upper(), data.get("path")
        if not method or not path:
            return _json(error="method and path are required", status=400)
        times = data.get("times")
        if data.get("hang") is not None:
            pve.hangs[(method, path)] = {"hang": float(data["hang"]), "times": times}
            return _json({"method": method, "path": path, "hang": float(data["hang"]), "times": times})
        try:
            pve.fail(method, path, status=data.get("status"), message=data.get("message"), error=data.get("error"), times=times)
        except (TypeError, ValueError) as exc:
            return _json(error=str(exc), status=400)
        return _json({"method": method, "path": path, "times": times})

    @routes.delete("/fail")
    async def fail_clear(request):
        pve.failures.clear()
        pve.hangs.clear()
        return _json(True)

    @routes.get("/errors")
    async def errors(request):
        return _json(pve.errors_for(request.query.get("method", "GET"), request.query.get("path", "/")))

    @routes.get("/ha/status")
    async def ha_status(request):
        node = request.query.get("node") or pve.node_names[0]
        return _json(pve.ha.status_current(need_node(node)))

    @routes.post("/ha/add")
    async def ha_add(request):
        data = await body_of(request)
        return await ha_command(dict(data, cmd="add"))

    @routes.post("/ha/cmd")
    async def ha_cmd(request):
        return await ha_command(await body_of(request))

    async def ha_command(data: dict[str, Any]) -> web.Response:
        """`ha-manager add|set|remove|migrate|relocate` on a node, through the API's handlers."""
        node = need_node(data.get("node"))
        handlers = {
            "add": pve._ha_res_create,
            "set": pve._ha_res_update,
            "remove": pve._ha_res_delete,
            "migrate": pve._ha_res_migrate,
            "relocate": pve._ha_res_relocate,
        }
        handler = handlers.get(data.get("cmd"))
        if handler is None:
            return _json(error=f"unknown command {data.get('cmd')!r}", status=400)
        token = _LOCAL.set(node)
        try:
            values = {"sid": str(data.get("sid"))}
            values.update({k: v for k, v in (data.get("params") or {}).items() if v is not None})
            if pve.power.get(node) != "on":
                raise PveError(500, "cluster not ready - no quorum?")
            if data.get("cmd") != "remove":
                pve.need_quorum()
            result = await handler(values, "root@pam")
        except PveError as exc:
            message = exc.message
            if exc.errors:
                message += "\n" + "\n".join(f"{k}: {v}" for k, v in exc.errors.items())
            return _json(error=message, status=exc.status)
        finally:
            _LOCAL.reset(token)
        return _json(result)

    @routes.get("/ha/manager_status")
    async def ha_manager_status(request):
        node = request.query.get("node") or pve.node_names[0]
        return _json(pve.ha.manager_status(need_node(node)))

    @routes.get("/ha/resources")
    async def ha_resources(request):
        return _json(await pve._ha_res_list({}, "root@pam"))

    @routes.get("/ha/log")
    async def ha_log(request):
        since = int(request.query.get("since", 0) or 0)
        lines = list(pve.ha.log_lines)
        first = pve.ha.log_seq - len(lines)
        return _json(lines[max(0, since - first) :])

    @routes.get("/qm/status")
    async def qm_status(request):
        node = need_node(request.query.get("node"))
        try:
            vmid = int(request.query.get("vmid", ""))
        except ValueError:
            return _json(error="400 Parameter verification failed.\nvmid: type check ('integer') failed", status=400)
        vm = pve.vm(vmid)
        if vm is None or vm.node != node:
            return _json(error=f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist", status=404)
        data = pve._vm_status(vm)
        return _json(data)

    @routes.get("/services")
    async def services(request):
        node = need_node(request.query.get("node"))
        on = pve.power[node] != "off"
        since = pve.started_wall
        units = {}
        for unit, pid in (
            ("pve-ha-lrm", 1201),
            ("pve-ha-crm", 1187),
            ("pve-cluster", 913),
            ("corosync", 1002),
            ("pvedaemon", 1145),
            ("pveproxy", 1160),
            ("pvestatd", 1130),
            ("watchdog-mux", 880),
        ):
            units[unit] = {"active": "active" if on else "inactive", "sub": "running" if on else "dead", "since": since, "pid": pid}
        return _json(units)

    @routes.get("/storage")
    async def storage(request):
        refresh = request.query.get("refresh") in ("1", "true")
        out = {}
        for sid, store in pve.storages.items():
            if store.get("type") != "rbd":
                continue
            st = await pve._rbd_status(sid, refresh=refresh)
            out[sid] = {
                "active": st["active"],
                "reason": st["reason"],
                "pool": store.get("pool"),
                "monhost": store.get("monhost"),
                "username": store.get("username"),
                "keyring": pve.ceph_access.has_keyring(sid),
            }
        return _json(out)

    @routes.post("/vm/start-error")
    async def vm_start_error(request):
        data = await body_of(request)
        vm = pve.vm(int(data.get("vmid", 0) or 0))
        if vm is None:
            return _json(error=f"no VM {data.get('vmid')}", status=404)
        vm.start_error = data.get("message") or None
        return _json({"vmid": vm.vmid, "start_error": vm.start_error})

    @routes.get("/holders")
    async def holders(request):
        return _json({str(h.vmid): {"pid": h.proc.pid, "node": h.node, "images": h.images, "since": h.started} for h in pve.holders.values()})

    @routes.get("/tasks")
    async def tasks(request):
        vmid = request.query.get("vmid")
        out = [dict(t) for t in pve.tasklog if vmid is None or t["id"] == str(vmid)]
        return _json(out)

    app = web.Application()
    app.add_routes(routes)
    return app


def _sshd_fault(node: str, action: str) -> None:
    """A `poweroff` typed on the node also takes its SSH server down (restore brings it back).
    Only for the lab's own nodes (config manage_sshd), through lab.sshd (the other half of
    the lab)."""
    try:
        from lab import sshd
    except ImportError:
        return
    try:
        if action == "restore":
            sshd.start_role(node)
        else:
            sshd.stop_role(node)
    except Exception:
        LOG.exception("sshd %s for %s failed", action, node)


# ---------------------------------------------------------------------- main


def check_fakepve() -> None:
    if fakepve.__version__ != FAKEPVE_VERSION:
        raise SystemExit(f"lab.pve needs fakepve=={FAKEPVE_VERSION} (installed: {fakepve.__version__}); its hooks are pinned in lab/pve/compat.py")
    from lab.pve import compat

    changed = compat.changed_hooks()
    if changed:
        raise SystemExit("fakepve hooks overridden by lab.pve changed: " + ", ".join(changed))


async def serve(config: dict[str, Any]) -> None:
    pve = LabPve(config)
    await pve.start(config["cert_file"], config["key_file"])
    runner = web.AppRunner(control_app(pve), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config["control_host"], config["control_port"], reuse_address=True).start()
    pve.control_runner = runner
    LOG.info(
        "lab PVE (fakepve %s, mode %s, time scale %s) on %s, control http://%s:%s",
        fakepve.__version__,
        pve.mode,
        pve.time_scale,
        ", ".join(f"{n}={a}" for n, a in pve.node_addr.items()),
        config["control_host"],
        config["control_port"],
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    LOG.info("stopping")
    await pve.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.pve.server")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("fakepve").setLevel(logging.WARNING)
    for key in [k for k in os.environ if k.startswith("CEPH_")]:
        del os.environ[key]
    check_fakepve()
    fake_errors  # noqa: B018 - imported so a broken catalogue fails at start, not on first use
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
