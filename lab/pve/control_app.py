"""The lab PVE's control channel (plain HTTP on loopback, never a PVE API): faults, mode, time
scale, injected API failures and hangs, a slow Ceph, and read-outs of the HA manager, VMs,
storages, holders and tasks. The client is control.py (stdlib only; the node shims use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import fakepve
from aiohttp import web
from fakepve.model import PveError

from lab.pve.app import LOCAL, LabPve

LOG = logging.getLogger("lab.pve")
REBOOT_PVE_SECONDS = 30  # a node's reboot: from power off to powered on again (firmware, kernel, boot)


def _json(data: Any = None, status: int = 200, error: str | None = None) -> web.Response:
    body = {"data": data} if error is None else {"error": error}
    return web.json_response(body, status=status)


def control_app(pve: LabPve) -> web.Application:
    routes = web.RouteTableDef()
    sshd_stops: dict[str, asyncio.Task] = {}
    shutdowns: dict[str, asyncio.Task] = {}  # a node's graceful shutdown or reboot under way

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

    @routes.post("/node/shutdown")
    async def node_shutdown(request):
        """A graceful `reboot` / `shutdown -h now` typed on a node (the shims): the LRM's shutdown
        request under datacenter.cfg's HA shutdown policy (ha/lrm.py node_shutdown); once the LRM
        has ended the node powers off (its sshd with it), and a reboot powers it on again after
        REBOOT_PVE_SECONDS. Answers at once, as systemd does."""
        data = await body_of(request)
        node = need_node(data.get("node"))
        if pve.power.get(node) != "on":
            return _json(error=f"{node} is not running", status=400)
        reboot = bool(data.get("reboot"))
        policy = pve.ha.node_shutdown(node, reboot, pve.shutdown_policy())

        async def power_cycle() -> None:
            while not pve.ha.lrm_exited(node):
                await asyncio.sleep(pve.ha.secs(1))
            pve.ha.log(node, "systemd-shutdown", "info", "Rebooting." if reboot else "Powering off.")
            await pve.fault(node, "poweroff")
            if pve.config.get("manage_sshd"):
                await asyncio.get_running_loop().run_in_executor(None, _sshd_fault, node, "stop")
            if reboot:
                await asyncio.sleep(pve.ha.secs(REBOOT_PVE_SECONDS))
                await pve.fault(node, "restore")
                if pve.config.get("manage_sshd"):
                    await asyncio.get_running_loop().run_in_executor(None, _sshd_fault, node, "restore")

        shutdowns[node] = asyncio.ensure_future(power_cycle())
        return _json({"node": node, "reboot": reboot, "policy": policy})

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
        pve.ceph["slow"] = 0.0
        return _json(True)

    @routes.post("/ceph")
    async def ceph(request):
        """fakepve's Ceph scenario: `slow` PVE seconds added to every operation on a VM's RBD disks
        (ceph_io: create, start, config changes), on top of the real Ceph's own time."""
        data = await body_of(request)
        try:
            slow = float(data.get("slow", 0))
        except (TypeError, ValueError):
            return _json(error="slow must be a number of PVE seconds", status=400)
        if slow < 0:
            return _json(error="slow must be >= 0", status=400)
        pve.ceph["slow"] = slow
        return _json({"slow": slow})

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
            "node-maintenance": pve._ha_node_maintenance,
        }
        handler = handlers.get(data.get("cmd"))
        if handler is None:
            return _json(error=f"unknown command {data.get('cmd')!r}", status=400)
        token = LOCAL.set(node)
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
            LOCAL.reset(token)
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
        """NODE's systemd units (units.py): {unit: {active, sub, since, pid}}; all inactive while
        the node is powered off."""
        node = need_node(request.query.get("node"))
        return _json(pve.units.view(node, powered=pve.power[node] != "off"))

    @routes.post("/services")
    async def services_action(request):
        """`systemctl start|stop|restart|try-restart UNIT...` on a node: {node, action, units}.
        Answers the node's units once the jobs are done (as GET /services); 404 naming an
        unknown unit, 409 when the node is powered off, 400 for a bad action."""
        data = await body_of(request)
        node = need_node(data.get("node"))
        units = data.get("units")
        if not isinstance(units, list) or not units or not all(isinstance(u, str) and u for u in units):
            return _json(error="units must be a non-empty list of unit names", status=400)
        if pve.power[node] == "off":
            return _json(error=f"{node} is powered off", status=409)
        try:
            result = await pve.unit_action(node, str(data.get("action")), units)
        except LookupError as exc:
            return _json(error=f"unknown unit {exc.args[0]}", status=404)
        except ValueError as exc:
            return _json(error=str(exc), status=400)
        return _json(result)

    @routes.post("/services/reset")
    async def services_reset(request):
        """Every unit of every powered node active again (`lab up` resets what a test stopped)."""
        pve.reset_units()
        return _json({n: pve.units.view(n, powered=pve.power[n] != "off") for n in pve.node_names})

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

    def vm_of(data: dict[str, Any]) -> Any:
        vm = pve.vm(int(data.get("vmid", 0) or 0))
        if vm is None:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no VM {data.get('vmid')}"}), content_type="application/json")
        return vm

    @routes.post("/vm/start-error")
    async def vm_start_error(request):
        vm = vm_of(data := await body_of(request))
        vm.start_error = data.get("message") or None
        return _json({"vmid": vm.vmid, "start_error": vm.start_error})

    @routes.post("/vm/start-secs")
    async def vm_start_secs(request):
        vm = vm_of(data := await body_of(request))
        vm.start_secs = float(data.get("secs") or 0)
        return _json({"vmid": vm.vmid, "start_secs": vm.start_secs})

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
