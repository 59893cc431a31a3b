"""The lab's Proxmox VE API: `LabPve`, fakepve (pinned) composed with the lab's API modules
(api/, one per subtree of PVE's API), its model (ha/, rbdstore.py, vmproc.py) and PVE's
routing (router.py). Lab only: fakepve is AGPL-3.0 and the product never imports it.

One process serves the 3-node cluster: every node's API on its own address (a powered-off node's
listener is closed: connections are refused; an isolated node's address drops them: they time out
(LabPve.blackhole); the others keep serving), one shared cluster state.

Every call is logged to <state>/pve/calls.log (calllog.py) with whose answer it was. Where the
lab has no model of a method PVE's schema has, it answers 501 `Method '...' not implemented`
(PVE's text for a method without handler) and logs the call as `unmodelled`: fakepve's
generic answers built from the schema (a UPID for a task that did nothing, made-up data) are
never given, since a client would take them for PVE's. An exception inside the lab is a 500
logged as `lab-fault`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from fakepve import FakePve

from lab.pve import calllog
from lab.pve.api.access import AccessApi
from lab.pve.api.cluster_ha import ClusterHaApi
from lab.pve.api.cluster_options import ClusterOptionsApi
from lab.pve.api.cluster_resources import ClusterResourcesApi
from lab.pve.api.cluster_status import ClusterStatusApi
from lab.pve.api.nodes_qemu import NodesQemuApi
from lab.pve.api.nodes_qemu_clone import NodesQemuCloneApi
from lab.pve.api.nodes_qemu_status import NodesQemuStatusApi
from lab.pve.api.nodes_storage import NodesStorageApi
from lab.pve.api.storage import StorageConfigApi
from lab.pve.api.tasks import TasksApi
from lab.pve.api.version import VERSIONS, VersionApi
from lab.pve.ha import HaManager
from lab.pve.rbdstore import CephAccess
from lab.pve.router import KIND, REACHED, SENT, PveRunner, call_recorder, not_implemented, rel_uri
from lab.pve.units import ACTIONS, ACTIVE, DEACTIVATING, INACTIVE, NodeUnits
from lab.pve.vmproc import Holder, VmProcesses

LOG = logging.getLogger("lab.pve")

# The node whose address the current request came in on.
LOCAL: contextvars.ContextVar[str | None] = contextvars.ContextVar("lab_pve_local", default=None)
# The path the current request was sent with (raw, before PVE's routing made it canonical).
SENT_PATH: contextvars.ContextVar[str | None] = contextvars.ContextVar("lab_pve_sent_path", default=None)

# A keyring in a form body, for fakepve's in-memory record of requests (pve.requests).
REDACT = re.compile(rb"(?<![^&])(keyring=)[^&]*")


class LabPve(
    AccessApi,
    VersionApi,
    ClusterStatusApi,
    ClusterResourcesApi,
    ClusterHaApi,
    ClusterOptionsApi,
    NodesQemuApi,
    NodesQemuCloneApi,
    NodesQemuStatusApi,
    NodesStorageApi,
    StorageConfigApi,
    TasksApi,
    VmProcesses,
    FakePve,
):
    def __init__(self, config: dict[str, Any]) -> None:
        self.node_addr: dict[str, str] = dict(config["nodes"])
        first = next(iter(self.node_addr.values()))
        super().__init__(user="root@pam", password=config["password"], host=first, port=config.get("port", 8006))
        self.config = config
        self.state_dir = Path(config["state_dir"])
        self.pids_dir = Path(config["pids_dir"])
        self.nodes = {n: {"online": True} for n in self.node_addr}
        self.power: dict[str, str] = {n: "on" for n in self.node_addr}
        self.started_wall = time.time()
        self.units = NodeUnits(list(self.node_addr), self.started_wall)  # systemd units per node
        self.cluster_name = config.get("cluster_name", "pve-lab")
        self.apitokens[config["token_id"]] = config["token_secret"]
        self.init_access({config["token_id"]: False})  # the lab's own root token: no privilege separation
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
        self.blackholes: dict[str, tuple[socket.socket, socket.socket]] = {}  # isolated nodes' addresses (blackhole)
        self.ssl_ctx: ssl.SSLContext | None = None
        self.ha = HaManager(self)
        self.datacenter: dict[str, str] = {}  # datacenter.cfg (api/cluster_options.py)
        self.control_runner: web.AppRunner | None = None
        self._background: set[asyncio.Task] = set()
        self.calls: calllog.CallLog | None = None
        self.seed_isos(dict(config.get("isos") or {}))
        self.import_files: dict[str, str] = {}  # local's `import/<name>` volumes -> their files
        self.seed_imports(dict(config.get("imports") or {}))

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
        return LOCAL.get() or self.node_names[0]

    def sent_rel_uri(self) -> str | None:
        """The current request's path after /api2/json, decoded, as the client sent it."""
        sent = SENT_PATH.get()
        return rel_uri(sent) if sent else None

    def set_mode(self, mode: str) -> None:
        if mode not in VERSIONS:
            raise ValueError(f"mode must be one of {', '.join(VERSIONS)}")
        previous = getattr(self, "mode", None)
        self.mode = mode
        self.version, self.release_version, _repoid = VERSIONS[mode]
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
        """Listen on every node's address (fakepve listens on one), with PVE's routing and the call log."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certfile, keyfile)
        self.ssl_ctx = ctx
        self.calls = calllog.CallLog(self.state_dir / "calls.log")
        self.runner = PveRunner(self._build_app(), access_log=None)
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

    def blackhole(self, node: str) -> None:
        """A node cut from the network drops what is sent to it: a client's connection to its API
        never completes and times out (a powered-off node's address refuses at once, as its host's
        kernel or the router answers). On loopback the lab makes that with a listening socket whose
        accept queue is full (one connection nobody accepts, backlog 0): Linux then drops every
        further SYN (tcp_conn_request: sk_acceptq_is_full), exactly what a firewall DROP does."""
        if node in self.blackholes:
            return
        addr = self.node_addr[node]
        sink = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sink.bind((addr, self.port))
        sink.listen(0)
        filler = socket.create_connection((addr, self.port), timeout=2)
        self.blackholes[node] = (sink, filler)

    def unblackhole(self, node: str) -> None:
        for sock in self.blackholes.pop(node, ()):
            sock.close()

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
        if self.calls is not None:
            self.calls.close()

    # ------------------------------------------------------------------ request hooks

    def _build_app(self):
        """fakepve's app with the call log as the outermost middleware (it sees every answer)."""
        app = super()._build_app()
        app.middlewares.insert(0, call_recorder(self.calls, self.local_node_of, self._lab_fault))
        return app

    def _lab_fault(self, request) -> web.Response:
        """An exception inside the lab: a 500 that says it is not PVE's answer (no exception text:
        it could hold a value; the traceback is in server.log)."""
        message = f"lab fault (not a PVE answer): an exception in the lab serving {request.method} {rel_uri(request.get(SENT) or request.path)}"
        return web.json_response({"data": None, "message": message}, status=500, reason="lab fault")

    async def _answer(self, request, handler, generic, path_node):
        request[REACHED] = True
        local = self.local_node_of(request)
        if local is not None and self.power.get(local) != "on":
            # the node is down: its address does not answer (a late request on a kept-alive
            # connection is dropped the same way)
            request[KIND] = calllog.DOWN
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)
        LOCAL.set(local)
        SENT_PATH.set(request.get(SENT) or request.rel_url.raw_path)
        if any(request.method == key[0] and self._failure_matches(request, generic, key[1]) for key in self.failures):
            request[KIND] = calllog.INJECTED
        for key, rule in list(self.hangs.items()):
            if request.method != key[0] or not self._failure_matches(request, generic, key[1]):
                continue
            request[KIND] = calllog.INJECTED
            if rule["times"] is not None:
                rule["times"] -= 1
                if rule["times"] <= 0:
                    del self.hangs[key]
            await asyncio.sleep(rule["hang"])
            break
        try:
            response = await super()._answer(request, handler, generic, path_node)
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception:
            LOG.exception("lab fault in %s %s", request.method, request.get(SENT) or request.path)
            request[KIND] = calllog.LAB_FAULT
            return self._lab_fault(request)
        if response.status == 501 and request.get(KIND) != calllog.INJECTED:
            # PVE's rest_handler text, with the path as sent and no trailing newline
            return not_implemented(request.method, request.get(SENT) or request.rel_url.raw_path)
        return response

    async def _generic(self, request):
        """fakepve answers every other method of PVE's schema with data made up from the schema
        (and a task that does nothing); the lab answers 501 instead and logs it: `unmodelled`
        when PVE has the method (the lab is missing it), plain PVE when PVE has no such method."""
        match = self.resolve(request, "/api2/json")
        if match is not None and request.method in match.methods:
            request[KIND] = calllog.UNMODELLED
        return not_implemented(request.method, request.get(SENT) or request.rel_url.raw_path)

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

    # ------------------------------------------------------------------ faults

    async def fault(self, node: str, action: str) -> dict[str, Any]:
        if node not in self.node_addr:
            raise ValueError(f"unknown node {node!r}: use one of {', '.join(self.node_names)}")
        if action == "poweroff":
            self.power[node] = "off"
            self.nodes[node]["online"] = False
            self.unblackhole(node)
            await self.close_listener(node)
            for vm in list(self.vms):
                if vm.node == node and vm.status == "running":
                    self.lab_kill_vm(vm, "node powered off")
            self.ha.log(node, "systemd-logind", "info", "Power key pressed short. Powering off...")
        elif action == "isolate":
            self.power[node] = "isolated"
            self.nodes[node]["online"] = False
            await self.close_listener(node)
            self.blackhole(node)
            self.ha.log(node, "corosync", "notice", "[TOTEM ] A processor failed, forming new configuration.")
        elif action == "restore":
            was = self.power[node]
            self.power[node] = "on"
            self.nodes[node]["online"] = True
            if was == "off":  # powered on: a boot, every unit runs again
                self.units.boot(node)
                self.ha.node_booted(node)
            self.unblackhole(node)
            await self.open_listener(node)
            self.ha.log(node, "corosync", "notice", f"[QUORUM] Members rejoined ({was} -> on)")
        else:
            raise ValueError(f"unknown action {action!r}: use poweroff, isolate or restore")
        self.quorate = self.ha.quorate()
        self.ha.wake()
        return {"node": node, "action": action, "power": self.power[node], "quorate": self.quorate}

    # ------------------------------------------------------------------ systemd units

    async def unit_action(self, node: str, action: str, units: list[str], wait: float = 60.0) -> dict[str, Any]:
        """`systemctl start|stop|restart|try-restart UNIT...` run on NODE: the units' states change
        (units.py); pve-ha-lrm and pve-ha-crm go through the HA manager (ha/), since their stop
        and start are what PVE's HA stack sees. Like systemctl, it returns once each job is done:
        a stopping LRM is `deactivating` until its services are frozen (up to WAIT real seconds,
        then the answer says `deactivating`). ValueError for an unknown action, LookupError for
        an unknown unit (nothing is changed then)."""
        if node not in self.node_addr:
            raise ValueError(f"unknown node {node!r}")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
        unknown = [u for u in units if not self.units.known(u)]
        if unknown:
            raise LookupError(unknown[0])
        if self.power[node] == "off":
            raise ValueError(f"{node} is powered off")
        for unit in units:
            state = self.units.state(node, unit)
            if action == "try-restart" and state != ACTIVE:
                continue
            if action in ("stop", "restart", "try-restart"):
                self._unit_stop(node, unit)
                await self._unit_settled(node, unit, wait)
            if action in ("start", "restart", "try-restart"):
                await self._unit_settled(node, unit, wait)  # a start waits for a stop under way
                self._unit_start(node, unit)
        return self.units.view(node, powered=True)

    def _unit_stop(self, node: str, unit: str) -> None:
        if unit == "pve-ha-lrm":
            self.ha.lrm_stop(node)
        elif unit == "pve-ha-crm":
            self.ha.crm_stop(node)
        else:
            self.units.set(node, unit, INACTIVE)

    def _unit_start(self, node: str, unit: str) -> None:
        if unit == "pve-ha-lrm":
            self.ha.lrm_start(node)
        elif unit == "pve-ha-crm":
            self.ha.crm_start(node)
        else:
            self.units.set(node, unit, ACTIVE)

    async def _unit_settled(self, node: str, unit: str, wait: float) -> None:
        end = time.monotonic() + wait
        while self.units.state(node, unit) == DEACTIVATING and time.monotonic() < end:
            self.ha.wake()
            await asyncio.sleep(0.05)

    def reset_units(self) -> None:
        """Every unit of every powered node active again (`lab up`), through the HA manager for
        its two daemons; a powered-off node's units come back when it is powered on."""
        for node in self.node_names:
            if self.power[node] == "off":
                continue
            for unit in self.units.units[node]:
                if self.units.state(node, unit) != ACTIVE:
                    self._unit_start(node, unit)
