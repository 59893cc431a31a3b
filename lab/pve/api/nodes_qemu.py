"""/nodes/{node}/qemu: fakepve's qemu-server handlers (create, config, destroy, status actions;
qemu-server src/PVE/API2/Qemu.pm) with what the lab adds to match PVE on external Ceph:

- create and config updates allocate disks on RBD storages as real images (`rbd create`), in
  the task, before the config is written (Qemu.pm create_disks);
- a config update checks the digest and the VM's lock BEFORE it allocates anything (Qemu.pm
  $update_vm_api: load_and_check_config -- `checksum mismatch (file change by other user?)`,
  then check_lock -- `VM is locked (create)` -- then the disks), so a locked VM never gets an
  orphan image;
- destroy removes the disks the VM owns and nothing else (QemuServer.pm destroy_vm,
  $remove_owned_drive: cdroms and volumes without an owner, such as ISO images, stay), the
  RBD images with `rbd rm` (a failure is PVE's `Could not remove disk ..., check manually`);
  with purge, the VM leaves the HA resources and rules;
- start/stop/shutdown run the VM's process (vmproc.py); an HA-managed VM is started or stopped
  through the HA manager (`Requesting HA start for VM <vmid>`, Qemu.pm vm_start/vm_stop with
  PVE::HA::Config::vm_is_ha_managed);
- a change to a running VM is hot-plugged or left pending as PVE does it (hotplug.py);
- PUT .../resize resizes the RBD image (Qemu.pm resize_vm); POST .../migrate moves the VM (an
  HA-managed one through the HA manager: `Requesting HA migration for VM <vmid> to node <node>`);
- the LRM's `qm start|stop|migrate` (ha/lrm.py) run as the same tasks (qmstart, qmstop, qmigrate);
- permissions as Qemu.pm checks them: the privilege of each config key (`$check_vm_modify_config_perm`
  and its option tables), the bridge of each NIC (QemuServer.pm check_bridge_access, pve-guest-common
  GuestHelpers.pm check_vnet_access: `SDN.Use` on /sdn/zones/localnetwork/<bridge>[/<tag>]), and
  create_vm's order of checks; a destroyed VM's ACLs go with it (`remove_vm_access`). Left as
  fakepve has it, stricter than PVE: a create asks VM.Config.Disk of each drive and VM.Config.CDROM
  of a cdrom (PVE's create leaves drives out of the key check: VM.Allocate and the storage's right
  cover them); bpg's create sends `boot` (VM.Config.Disk) anyway, and the role holds VM.Config.CDROM
  for an ISO's change, so no client of the lab meets the difference.

Routes are found by PVE's router rules (router.py), so `DELETE /nodes/<node>/qemu/<vmid>/`
(bpg's DeleteVM, with the query after the slash) is the destroy of that VM.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from fakepve.lxc import SIZE_UNITS, format_size
from fakepve.model import PveError, TaskError
from fakepve.qemu import DRIVE_KEY, NEW_DISK, drives_of, is_cdrom, join_drive, split_drive, volume_ref, with_mac
from fakepve.routing import die, ok, param_error
from fakepve.server import USER

from lab.pve.api.tasks import AFTER, BEFORE, OPS
from lab.pve.hotplug import hotplug_pending
from lab.pve.rbdstore import RbdError


def _config_types() -> dict[str, str]:
    """The types of a VM's config keys, from PVE's schema of POST /nodes/{node}/qemu/{vmid}/config."""
    from fakepve import schema

    found = schema.load().match("/nodes/n/qemu/100/config")
    props = ((found.methods if found else {}).get("POST") or {}).get("parameters", {}).get("properties", {})
    return {key: str(spec.get("type")) for key, spec in props.items()}


_TYPES: dict[str, str] = {}

# Qemu.pm's option tables for $check_vm_modify_config_perm: key -> the privilege it needs on /vms/<vmid>.
_OPTION_PRIVS = {
    **dict.fromkeys(("cores", "cpu", "runningcpu", "cpulimit", "cpuunits", "numa", "smp", "sockets", "vcpus"), "VM.Config.CPU"),
    **dict.fromkeys(("memory", "balloon", "shares", "allow-ksm"), "VM.Config.Memory"),
    **dict.fromkeys(
        ("acpi", "hotplug", "kvm", "machine", "runningmachine", "scsihw", "smbios1", "tablet", "vga", "watchdog", "audio0", "rng0"), "VM.Config.HWType"
    ),
    **dict.fromkeys(
        (
            "agent",
            "autostart",
            "bios",
            "description",
            "keyboard",
            "localtime",
            "migrate_downtime",
            "migrate_speed",
            "name",
            "onboot",
            "ostype",
            "protection",
            "reboot",
            "startdate",
            "startup",
            "tdf",
            "template",
            "tags",  # not in the tables: assert_tag_permissions checks VM.Config.Options for it
        ),
        "VM.Config.Options",
    ),
    "freeze": "VM.PowerMgmt",
    **dict.fromkeys(("boot", "bootdisk", "vmstatestorage", "vmstate"), "VM.Config.Disk"),
    **dict.fromkeys(("cicustom", "cipassword", "citype", "ciuser", "ciupgrade", "nameserver", "searchdomain", "sshkeys"), "VM.Config.Cloudinit"),
}


@contextlib.contextmanager
def root_only_is_a_die():
    """`only root can set '<key>' config` is a plain die in $check_vm_modify_config_perm: PVE answers
    it 500 (fakepve: 403)."""
    try:
        yield
    except PveError as exc:
        if exc.status == 403 and str(exc.message).startswith("only root can set "):
            raise PveError(500, exc.message) from None
        raise


def bridge_paths(params: dict[str, Any]) -> list[str]:
    """check_bridge_access: the SDN path each NIC's bridge (and VLAN tag) needs SDN.Use on."""
    out = []
    for key in sorted(params):
        if not re.fullmatch(r"net\d+", key):
            continue
        fields = dict(part.split("=", 1) for part in str(params[key]).split(",") if "=" in part)
        bridge = fields.get("bridge")
        if not bridge:
            continue
        if fields.get("tag"):
            out.append(f"/sdn/zones/localnetwork/{bridge}/{fields['tag']}")
        elif not fields.get("trunks"):
            out.append(f"/sdn/zones/localnetwork/{bridge}")
    return out


def config_value(key: str, value: Any) -> Any:
    """A config value as PVE keeps and returns it: qemu-server's parse_vm_config reads every key of
    the config and of its [PENDING] section through check_type (PVE/QemuServer.pm), which makes an
    integer key a number and a boolean 1 or 0; a form field arrives as text ("2"), and bpg decodes
    `cores` of GET .../config into an int64 (a string there fails its refresh)."""
    if not _TYPES:
        _TYPES.update(_config_types())
    kind = _TYPES.get(key.rstrip("0123456789") + "[n]" if key[-1:].isdigit() and key not in _TYPES else key)
    text = str(value)
    if kind == "integer" and re.fullmatch(r"-?\d+", text):
        return int(text)
    if kind == "number" and re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text) if "." in text else int(text)
    if kind == "boolean" and text.lower() in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        return 1 if text.lower() in ("1", "true", "yes", "on") else 0
    return value


def drive_size(text: str) -> int:
    """PVE::JSONSchema::parse_size: a disk-size (`1073741824`, `32G`, `512M`) in bytes."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT])?", str(text))
    if found is None:
        raise param_error(size=f"unable to parse size '{text}'")
    return int(float(found.group(1)) * SIZE_UNITS.get(found.group(2) or "", 1))


class NodesQemuApi:
    """Mixin of LabPve: /nodes/{node}/qemu/{vmid} on RBD, with VM processes and HA."""

    def _qm_alloc(self, sid, vmid, fmt, size, linked_from=None):
        volid, fmt = super()._qm_alloc(sid, vmid, fmt, size, linked_from)
        store = self.storages.get(sid)
        if store is not None and store.get("type") == "rbd":
            self._ops().append(("create", sid, volid.split(":", 1)[1], size, dict(store)))
        return volid, fmt

    def _qm_free(self, volid):
        """vdisk_free of a volume the VM owns. destroy_vm's $remove_owned_drive skips volumes without
        an owner (`return if !$path || !$owner`): an ISO in the VM's cdrom stays on its storage
        (fakepve would forget it)."""
        sid, name = volume_ref(str(volid))
        store = self.storages.get(sid) if sid else None
        if store is not None and self._volume_owner(store, name) is None:
            return
        super()._qm_free(volid)
        if store is not None and store.get("type") == "rbd":
            self._ops().append(("remove", sid, name, dict(store)))

    def _volume_owner(self, store: dict[str, Any], name: str) -> int | None:
        """The vmid owning a volume (PVE::Storage::parse_volname), None for one nobody owns."""
        try:
            _vtype, owner, _fmt = self._parse_volname(store, name)
        except PveError:
            return None
        return owner

    # ------------------------------------------------------------------ create, config, destroy

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

    def _vm(self, request, priv=None):
        """The VM of a request, after its permission check: PVE's handler checks the method's
        `permissions` (the privilege on /vms/<vmid>) before its code looks the VM up, so a token
        without the privilege gets the 403 whether the VM exists or not (fakepve looks first)."""
        vmid = str(request.match_info.get("vmid", ""))
        if priv and vmid.isdigit() and int(vmid) >= 100:
            self.require(request[USER], f"/vms/{int(vmid)}", priv)
        return super()._vm(request, priv)

    def _config_priv(self, key):
        """Qemu.pm $check_vm_modify_config_perm: the privilege a config key needs (drives, serial,
        usb and hostpci keys as fakepve checks them; a key in no table is root's alone)."""
        if DRIVE_KEY.match(key) or re.fullmatch(r"(?:unused|serial|usb|hostpci|virtiofs)\d+|cdrom", key):
            return super()._config_priv(key)
        if re.fullmatch(r"numa\d+", key):
            return "VM.Config.CPU"
        if re.fullmatch(r"net\d+", key) or key == "running-nets-host-mtu":
            return "VM.Config.Network"
        if re.fullmatch(r"ipconfig\d+", key):
            return "VM.Config.Cloudinit"
        return _OPTION_PRIVS.get(key, "root")

    def _check_bridges(self, user, params) -> None:
        for path in bridge_paths(params):
            self.require(user, path, "SDN.Use")

    def _qm_create_checks(self, v, user) -> None:
        """create_vm's permission checks in its order (Qemu.pm): the default storage, ha-managed
        (Sys.Console on /), start (VM.PowerMgmt), VM.Allocate; fakepve repeats those, which then pass,
        and checks the drives and the config keys. The bridges come here, before the drives and
        keys (PVE: after them): a request missing both a key's and a bridge's privilege is refused
        naming the bridge's where PVE names the key's."""
        vmid, pool = int(v["vmid"]), v.get("pool")
        if v.get("storage"):
            self.require(user, "/storage/" + v["storage"], "Datastore.AllocateSpace")
        if str(v.get("ha-managed", "0")).lower() in ("1", "true"):
            self.require(user, "/", "Sys.Console")
        if str(v.get("start", "0")).lower() in ("1", "true"):
            self._qm_perm(user, vmid, pool, "VM.PowerMgmt")
        if not (self.allowed(user, f"/vms/{vmid}", "VM.Allocate") or (pool and self.allowed(user, f"/pool/{pool}", "VM.Allocate"))):
            raise PveError(403, "Permission check failed")
        self._check_bridges(user, v)

    async def _qm_create(self, v, user):
        self._qm_create_checks(v, user)
        for sid in self._rbd_targets(v, v.get("storage")):
            await self._rbd_status(sid)
            with contextlib.suppress(PveError):  # the allocation in the task fails with rbd's error, as on PVE
                await self._rbd_sync(sid, sizes=False)
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

        token = AFTER.set([after])
        try:
            with root_only_is_a_die():
                return await super()._qm_create(v, user)
        finally:
            AFTER.reset(token)

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
            self.remove_vm_access(vmid)
            return None

        async def early_checks_again():
            # API2/Qemu.pm destroy_vm: the worker takes the config flock (lock_config, 10 s, else
            # `can't lock file '/var/lock/qemu-server/lock-<vmid>.conf' - got timeout`) and runs
            # $early_checks again ("repeat, config might have changed"): a VM that a start holding
            # the flock brought up meanwhile, or one added to HA meanwhile, fails the task (fakepve
            # checked them only before the task)
            now = self.vm(vmid)
            if now is None:
                raise TaskError(f"Configuration file 'nodes/{v['node']}/qemu-server/{vmid}.conf' does not exist")
            if now.config.get("protection") in (1, "1", True):
                raise TaskError(f"can't remove VM {vmid} - protection mode enabled")
            if not purge and sid in self.ha.resources:  # PVE::HA::Config::service_is_configured
                raise TaskError(f"unable to remove VM {vmid} - used in HA resources and purge parameter not set.")
            if now.status == "running":  # PVE::QemuServer::check_running
                raise TaskError(f"VM {vmid} is running - destroy failed")

        vm = self.vm(vmid)
        if vm is not None:
            for store_id in {volume_ref(vol)[0] for _k, vol, _p in drives_of(vm.config)}:
                if store_id and self.storages.get(store_id, {}).get("type") == "rbd":
                    await self._rbd_sync(store_id)
        token, early = AFTER.set([after]), BEFORE.set([early_checks_again])
        try:
            return await super()._qm_destroy(v, user)
        finally:
            AFTER.reset(token)
            BEFORE.reset(early)

    async def _config_get(self, request):
        """GET .../qemu/{vmid}/config: the config with the pending changes applied, unless
        `current=1` (qemu-server API2/Qemu.pm vm_config -> pve-guest-common AbstractConfig
        load_current_config: "take pending changes in" when !$current; a pending deletion drops
        the key). fakepve answers the current values only, so a change made on a running VM
        (pending until its next start) was invisible to a client reading the config, e.g. bpg's
        refresh of a VM whose disk cache someone changed."""
        vm = self._vm(request, "VM.Audit")
        cfg = dict(vm.config)
        if request.query.get("current") not in ("1", "true"):
            for key, value in vm.pending.items():
                if value is None:
                    cfg.pop(key, None)
                else:
                    cfg[key] = value
        if "memory" in cfg:
            cfg["memory"] = str(cfg["memory"])  # PVE sends it as a string
        cfg["digest"] = vm.digest()
        return ok(cfg)

    async def _apply_config(self, vm, user, p):
        """A config update: fakepve keeps `scsi1: ceph-rbd:4` as written; PVE allocates the disk,
        but only after load_and_check_config (Qemu.pm $update_vm_api): the digest, then the lock."""
        p = {key: config_value(key, value) for key, value in p.items()}
        for key in [k for k in p if re.fullmatch(r"net\d+", k)]:
            p[key] = with_mac(p[key])  # $update_vm_api: parse_net (a new MAC when none is given) and print_net
        self._check_bridges(user, p)
        new_disks = [k for k in p if DRIVE_KEY.match(k) and (NEW_DISK.match(volume := split_drive(str(p[k]))[0] or "") or volume.endswith(":cloudinit"))]
        if new_disks:
            self.need_quorum()
            if p.get("digest") and p["digest"] != vm.digest():
                raise die("checksum mismatch (file change by other user?)")
            if not p.get("skiplock"):
                self._check_lock(vm)
        for key in sorted(k for k in p if DRIVE_KEY.match(k)):
            volume, props = split_drive(str(p[key]))
            found = NEW_DISK.match(volume or "")
            if volume.endswith(":cloudinit") or props.get("import-from"):  # create_disks: nodes_qemu_clone.py
                self._qm_check_drive(user, vm.vmid, None, key, str(p[key]), None)
                p[key] = await self._allocate_now(lambda v=str(p[key]), k=key: self._qm_new_drive(vm.vmid, k, v, None)[0])
                continue
            if not found or is_cdrom(volume, props):
                # $update_vm_api parses every drive and prints it again (parse_drive/print_drive):
                # bpg's `file=cdrom,media=cdrom,` is stored as `cdrom,media=cdrom`, and a size in
                # bytes (`size=1073741824`) as PVE prints a disk-size (`size=1G`)
                if props.get("size"):
                    props = {**props, "size": format_size(drive_size(props["size"]))}
                if volume:
                    p[key] = join_drive(volume, props)
                continue
            sid = found.group(1)
            if not sid:
                raise die("no storage ID specified (and no default storage)")
            self._qm_image_store(sid, user)
            if self.storages[sid].get("type") == "rbd":
                await self._rbd_status(sid)
                await self._rbd_sync(sid, sizes=False)
            size = int(float(found.group(2)) * SIZE_UNITS["G"])
            props = dict(props)
            fmt = props.pop("format", None)
            volid = await self._allocate_now(lambda sid=sid, fmt=fmt, size=size: self._qm_alloc(sid, vm.vmid, fmt, size)[0])
            props["size"] = format_size(size)
            p[key] = join_drive(volid, props)
        with root_only_is_a_die():
            done = await super()._apply_config(vm, user, p)
        if vm.status == "running":  # fakepve leaves every device change pending: PVE hot-plugs (hotplug.py)
            hotplug_pending(vm.config, vm.pending)
        return done

    async def _allocate_now(self, allocate):
        """A config update's disk, made before the config is written (Qemu.pm $update_vm_api, outside
        any task): ALLOCATE's volume and its Ceph work at once; a failure is the update's error,
        and the volume is forgotten."""
        ops: list = []
        token = OPS.set(ops)
        try:
            made = allocate()
        finally:
            OPS.reset(token)
        try:
            await self._run_ops(ops, [])
        except TaskError as exc:
            super()._qm_free(split_drive(made)[0])
            raise die(str(exc)) from None
        return made

    # ------------------------------------------------------------------ routes fakepve lacks

    def _routes_lab_qemu(self):
        """PUT .../resize (Qemu.pm resize_vm) and POST .../migrate (Qemu.pm migrate_vm)."""
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
