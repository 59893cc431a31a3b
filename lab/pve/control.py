"""Client of the lab PVE's control channel: faults, mode, time scale, injected API failures,
and the node-local views the shims print. Standard library only, so the shims can load it
with any python3 (they put this directory on sys.path and `import control`).

The channel is plain HTTP with JSON bodies on a loopback address (default
http://127.10.20.10:8007, or $LAB_PVE_CONTROL, or the `control` of .lab/pve/info.json).
It is a lab tool: it has no authentication, like the loopback-only API it steers.

    from lab.pve.control import Control
    c = Control()
    c.fault("pve-node1", "poweroff")          # poweroff | isolate | restore
    c.set_mode("groups")                       # PVE 8 (groups) or "rules" (PVE 9)
    c.fail("POST", "/nodes/pve-node1/qemu", status=500, message="boom", times=1)
    c.fail("GET", "/cluster/resources", hang=30)   # the call times out
    c.set_ceph_slow(60)                        # RBD work on a VM's disks takes 60 PVE seconds more
    c.ha_status("pve-node2")                   # ha-manager status lines seen from a node
    c.service_action("pve-node2", "stop", ["pve-ha-lrm"])   # systemctl stop pve-ha-lrm on it
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.10.20.10:8007"


class ControlError(RuntimeError):
    """The control channel refused the request or could not be reached; .status is the HTTP
    status (0 when unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _default_url() -> str:
    url = os.environ.get("LAB_PVE_CONTROL")
    if url:
        return url
    state = os.environ.get("LAB_STATE_DIR") or str(Path(__file__).resolve().parents[2] / ".lab")
    try:
        return json.loads((Path(state) / "pve" / "info.json").read_text())["control"]
    except (OSError, ValueError, KeyError):
        return DEFAULT_URL


class Control:
    def __init__(self, url: str | None = None, timeout: float = 30.0) -> None:
        self.url = (url or _default_url()).rstrip("/")
        self.timeout = timeout

    # ------------------------------------------------------------------ plumbing

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, query: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                payload = json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read() or b"null") or {}
            except ValueError:
                payload = {}
            raise ControlError(payload.get("error") or f"HTTP {exc.code}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ControlError(f"lab PVE control channel {self.url} unreachable: {reason}") from None
        return payload.get("data") if isinstance(payload, dict) else payload

    def ping(self) -> bool:
        try:
            return bool(self.call("GET", "/ping", timeout=2))
        except ControlError:
            return False

    # ------------------------------------------------------------------ cluster

    def status(self) -> dict[str, Any]:
        """Nodes (power, online, listening), mode, time scale, quorum, HA manager state."""
        return self.call("GET", "/status")

    def fault(self, node: str, action: str, sshd: bool = False) -> dict[str, Any]:
        """poweroff | isolate | restore NODE. sshd=True also stops/starts the node's sshd
        (what a `poweroff` typed on the node does); lab.fault does that part itself."""
        return self.call("POST", "/fault", {"node": node, "action": action, "sshd": sshd})

    def set_mode(self, mode: str) -> dict[str, Any]:
        """'rules' (PVE 9: HA rules, groups API refused) or 'groups' (PVE 8)."""
        return self.call("POST", "/mode", {"mode": mode})

    def set_time_scale(self, scale: float) -> dict[str, Any]:
        """Real seconds per PVE second (0.1: the 60 s fence delay takes 6 s)."""
        return self.call("POST", "/time-scale", {"time_scale": scale})

    # ------------------------------------------------------------------ faults on demand

    def fail(
        self,
        method: str,
        path: str,
        status: int | None = None,
        message: str | None = None,
        error: str | None = None,
        times: int | None = None,
        hang: float | None = None,
    ) -> dict[str, Any]:
        """Make matching API calls fail. PATH is a suffix of the request path
        ('/nodes/pve-node1/qemu') or a schema template ('/nodes/{node}/qemu/{vmid}/config').
        status+message: that answer; error: one of PVE's catalogued errors by name (fakepve);
        hang: no answer for that many real seconds (the client times out). times: only the
        next N matching calls."""
        body = {"method": method.upper(), "path": path, "status": status, "message": message, "error": error, "times": times, "hang": hang}
        return self.call("POST", "/fail", {k: v for k, v in body.items() if v is not None})

    def clear_failures(self) -> None:
        """Drop every injected failure and hang, and the slow Ceph."""
        self.call("DELETE", "/fail")

    def set_ceph_slow(self, pve_seconds: float) -> dict[str, Any]:
        """A slow Ceph: PVE_SECONDS added to every operation on a VM's RBD disks (creating them in
        a VM create or config change, starting the VM); 0 for none (fakepve's Ceph scenario)."""
        return self.call("POST", "/ceph", {"slow": pve_seconds})

    def errors_for(self, method: str, path: str) -> list[dict[str, Any]]:
        """PVE's catalogued errors a method can return at PATH (names usable as fail(error=))."""
        return self.call("GET", "/errors", query={"method": method.upper(), "path": path})

    # ------------------------------------------------------------------ node-local views

    def ha_status(self, node: str | None = None) -> list[dict[str, Any]]:
        """GET /cluster/ha/status/current as NODE answers it (type, status, ... per entry)."""
        return self.call("GET", "/ha/status", query={"node": node})

    def ha_add(self, node: str, sid: str, **params: Any) -> None:
        """`ha-manager add SID [--state ...] [--group ...] ...` run on NODE."""
        self.ha_command(node, "add", sid, **params)

    def ha_command(self, node: str, cmd: str, sid: str, **params: Any) -> Any:
        """`ha-manager add|set|remove|migrate|relocate SID ...` run on NODE (PVE's errors as
        ControlError). migrate/relocate take node=TARGET in params."""
        return self.call("POST", "/ha/cmd", {"node": node, "cmd": cmd, "sid": sid, "params": params})

    def ha_resources(self) -> list[dict[str, Any]]:
        """GET /cluster/ha/resources (what `ha-manager config` prints)."""
        return self.call("GET", "/ha/resources")

    def ha_log(self, since: int = 0) -> list[str]:
        """The HA manager's log lines (CRM and LRM), like the nodes' syslog."""
        return self.call("GET", "/ha/log", query={"since": since})

    def qm_status(self, node: str, vmid: int, verbose: bool = False) -> dict[str, Any]:
        return self.call("GET", "/qm/status", query={"node": node, "vmid": vmid, "verbose": int(verbose)})

    def services(self, node: str) -> dict[str, Any]:
        """systemd units of NODE: {unit: {'active': 'active'|'deactivating'|'inactive', 'sub':
        'running'|'stop-sigterm'|'dead', 'since': ts, 'pid': n or None}}; every unit inactive
        while NODE is powered off."""
        return self.call("GET", "/services", query={"node": node})

    def service_action(self, node: str, action: str, units: list[str]) -> dict[str, Any]:
        """`systemctl start|stop|restart|try-restart UNIT...` on NODE; returns once the jobs are
        done (a stopping pve-ha-lrm waits for its services to be frozen), with NODE's units as
        services() answers them. ControlError 404 for an unknown unit, 409 when NODE is off."""
        return self.call("POST", "/services", {"node": node, "action": action, "units": list(units)}, timeout=max(self.timeout, 90))

    def reset_services(self) -> dict[str, Any]:
        """Every unit of every powered node active again ({node: units}); `lab up` does this."""
        return self.call("POST", "/services/reset")

    def storage_checks(self, refresh: bool = False) -> dict[str, Any]:
        """Per RBD storage: active, and why not (PVE's wording), from the real Ceph."""
        return self.call("GET", "/storage", query={"refresh": int(refresh)})

    def set_start_error(self, vmid: int, message: str | None) -> dict[str, Any]:
        """Every start of VMID fails with MESSAGE (a task error) until cleared with None."""
        return self.call("POST", "/vm/start-error", {"vmid": vmid, "message": message})

    def set_start_secs(self, vmid: int, secs: float) -> dict[str, Any]:
        """Every start of VMID (qm start, the API's or the LRM's) takes SECS PVE seconds, under the
        VM's config flock (QemuServer.pm vm_start holds it for the whole start); 0 for none."""
        return self.call("POST", "/vm/start-secs", {"vmid": vmid, "secs": secs})

    def holders(self) -> dict[str, Any]:
        """Running VM processes (the librbd lock holders): vmid -> {pid, node, images}."""
        return self.call("GET", "/holders")

    def tasks(self, vmid: int | None = None) -> list[dict[str, Any]]:
        """Tasks with their logs (newest last), optionally of one guest."""
        return self.call("GET", "/tasks", query={"vmid": vmid})
