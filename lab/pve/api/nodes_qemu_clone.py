"""/nodes/{node}/qemu/{vmid}/clone and .../template, and the cloud-init drive's volume, with the
disks' real Ceph work where PVE does it on RBD (qemu-server src/PVE/API2/Qemu.pm clone_vm and
template, src/PVE/QemuServer.pm clone_disk and template_create; pve-storage
src/PVE/Storage/RBDPlugin.pm create_base, clone_image, free_image; src/PVE/Storage.pm vdisk_free):

- template: each disk but the cdroms (a cloud-init drive counts as one, drive_is_cdrom) becomes a
  base image: `rbd rename vm-N-disk-M base-N-disk-M`, then the snapshot `__base__`, protected;
- clone, linked (the default of a template): `rbd clone <pool>/base-N-disk-M --snap __base__
  <pool>/vm-X-disk-K`, the volume named `base-N-disk-M/vm-X-disk-K`; a disk that is not a base
  image cannot be linked (`Linked clone feature is not supported for '<volid>' (<drive>)`);
- clone, full: a new image of the source's size (vdisk_alloc), then its data copied (qemu-img
  convert; the lab: every allocated extent through librbd); the clone's disk holds the source's
  bytes either way;
- a cloud-init drive is never linked nor copied: the clone gets an empty `vm-X-cloudinit` of 4 MiB
  (clone_disk), which PVE writes when the VM starts;
- a cloud-init drive given to a create or a config update (`<storage>:cloudinit`) is the volume
  `vm-N-cloudinit` of 4 MiB (Qemu.pm create_disks; fakepve names it like a disk);
- freeing a base image a linked clone still uses is refused (tasks.py `_free_image`), so
  destroying a template while a linked clone remains leaves its base image, with destroy_vm's
  warning `Could not remove disk '<volid>', check manually: base volume '<name>' is still in use by
  linked clones`; the VM itself is gone.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from fakepve.lxc import format_size, split_props
from fakepve.model import FakeVm, PveError, TaskError
from fakepve.qemu import CLONE_SKIP, DRIVE_KEY, NEW_DISK, drives_of, is_cdrom, join_drive, split_drive, volume_ref, with_mac
from fakepve.routing import die, param_error

from lab.pve import cloudinit, imports
from lab.pve.api.tasks import OPS
from lab.pve.rbdstore import RbdError

CLOUDINIT_SIZE = 4 * 1024**2  # PVE::QemuServer::Cloudinit CLOUDINIT_DISK_SIZE


def is_cloudinit(volume: str) -> bool:
    """drive_is_cloudinit: the volume is a cloud-init drive (`vm-N-cloudinit`), or asks for one (`<storage>:cloudinit`)."""
    return bool(re.search(r"(?:^|[:/])vm-\d+-cloudinit(?:\.\w+)?$", volume)) or volume.endswith(":cloudinit")


class NodesQemuCloneApi:
    """Mixin of LabPve: clones, templates and cloud-init volumes on RBD."""

    def _rbd(self, sid: str | None) -> bool:
        return bool(sid) and self.storages.get(sid, {}).get("type") == "rbd"

    def _alloc_named(self, sid: str, vmid: int, name: str, size: int) -> str:
        """vdisk_alloc with a name (the cloud-init drive's): the volume, and its image made in the task."""
        store = self.storages[sid]
        if not store.get("active", 1):
            raise die(f"storage '{sid}' is not online")
        if name in store.get("volumes", {}):
            raise die(f"unable to allocate disk '{name}' - volume already exists")
        store.setdefault("volumes", {})[name] = {"content": "images", "format": "raw", "size": size, "vmid": vmid, "ctime": int(time.time())}
        if self._rbd(sid):
            self._ops().append(("create", sid, name, size, dict(store)))
        return f"{sid}:{name}"

    def _qm_check_drive(self, user, vmid, pool, key, value, default):
        """check_storage_access, and for `import-from` its own checks (Qemu.pm: the special syntax
        `<storage>:0`, a source of type images or import the user may access)."""
        super()._qm_check_drive(user, vmid, pool, key, value, default)
        volume, props = split_drive(value)
        source = props.get("import-from")
        if not source:
            return
        found = NEW_DISK.match(volume)
        if not found or float(found.group(2)) != 0:
            raise param_error(**{key: "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"})
        sid, name = volume_ref(source)
        if sid is None:
            raise die(f"import from '{source}': only a volume of a storage is modelled by the lab (a path is root@pam's alone on PVE)")
        vtype, owner, _fmt = self._parse_volname(self._store(sid), name)
        if vtype not in ("images", "import"):
            raise param_error(**{key: f"{source} has wrong type '{vtype}' - needs to be 'images' or 'import'"})
        self._check_access(user, sid, vtype, owner, source)

    def _qm_new_drive(self, vmid, key, value, default):
        volume, props = split_drive(value)
        if props.get("import-from"):
            return self._import_drive(vmid, volume, dict(props), default)
        if not volume.endswith(":cloudinit") and volume != "cloudinit":
            return super()._qm_new_drive(vmid, key, value, default)
        sid = volume_ref(volume)[0] or default
        if not sid:
            raise die("no storage ID specified (and no default storage)")
        props = dict(props)
        props.pop("format", None)
        props["media"] = "cdrom"
        volid = self._alloc_named(sid, vmid, f"vm-{vmid}-cloudinit", CLOUDINIT_SIZE)
        return join_drive(volid, props), [volid]

    def _import_drive(self, vmid: int, volume: str, props: dict[str, str], default: str | None) -> tuple[str, list[str]]:
        """create_disks with `import-from` ($import_from_volid -> clone_disk, full): a volume of the
        source's size on the target storage, the source's data written onto it; the config keeps
        the new volume, without `import-from`."""
        source = props.pop("import-from")
        found = NEW_DISK.match(volume)
        target = (found.group(1) if found else None) or default
        if not target:
            raise die("no storage ID specified (and no default storage)")
        sid, name = volume_ref(source)
        path = self.import_files.get(name) if sid == "local" else None
        known = (self._volumes(sid).get(name) or {}) if sid else {}
        size = imports.virtual_size(path) if path else int(known.get("size") or 0)
        if not size:
            raise die(f"cannot import from '{source}' - could not get size of {source}")
        volid, _fmt = self._qm_alloc(target, vmid, props.pop("format", None), size)
        image = volume_ref(volid)[1]
        if path:
            self._ops().append(("import", target, image, path, dict(self.storages[target])))
        elif self._rbd(sid) and sid == target:
            self._ops().append(("copy", target, name.rsplit("/", 1)[-1], image, dict(self.storages[target])))
        else:
            raise die(f"cannot import from '{source}' - the lab imports a file of local's import content, or a volume of the target RBD storage")
        props["size"] = format_size(size)
        return join_drive(volid, props), [volid]

    # ------------------------------------------------------------------ the cloud-init drive

    async def lab_power_on(self, vm) -> None:
        """vm_start: the cloud-init drive written (apply_cloudinit_config), then the VM's process."""
        await self.lab_write_cloudinit(vm)
        await super().lab_power_on(vm)

    async def lab_write_cloudinit(self, vm) -> None:
        """The VM's cloud-init drive on RBD, written from its config (lab/pve/cloudinit.py); TaskError when that fails."""
        for _key, volume, _props in drives_of(vm.config):
            sid, name = volume_ref(volume)
            if not (self._rbd(sid) and name == f"vm-{vm.vmid}-cloudinit"):
                continue
            try:
                data = cloudinit.iso(cloudinit.files(vm.config, vm.vmid))
                await self.ceph_access.write_image(sid, self.storages[sid], name, data)
            except (ValueError, RbdError) as exc:
                raise TaskError(str(exc)) from None

    def _routes_lab_cloudinit(self):
        """PUT .../cloudinit (Qemu.pm cloudinit_update: `Regenerate and change cloudinit config drive`)."""
        return [("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit", self._qm_cloudinit_update)]

    async def _qm_cloudinit_update(self, v, user):
        vm = self.find(v["node"], v["vmid"])
        self.require(user, f"/vms/{vm.vmid}", "VM.Config.Cloudinit")
        self._check_lock(vm)
        try:
            await self.lab_write_cloudinit(vm)
        except TaskError as exc:
            raise die(str(exc)) from None
        return None

    # ------------------------------------------------------------------ template

    def _qm_rename_volume(self, volid):
        """vdisk_create_base, in the template task: fakepve renames the volume it keeps; on RBD the
        image is renamed, snapshotted and protected when the task's Ceph work runs."""
        sid, name = volume_ref(volid)
        renamed = super()._qm_rename_volume(volid)
        if self._rbd(sid) and renamed != volid:
            self._ops().append(("create_base", sid, name, dict(self.storages[sid])))
        return renamed

    async def _qm_template(self, v, user):
        vm = self.find(v["node"], v["vmid"])
        self.require(user, f"/vms/{vm.vmid}", "VM.Allocate")  # Qemu.pm template: permissions
        for sid in {volume_ref(volume)[0] for _k, volume, _p in drives_of(vm.config)}:
            if self._rbd(sid):
                await self._rbd_sync(sid, sizes=False)
        return await super()._qm_template(v, user)

    # ------------------------------------------------------------------ clone

    async def _qm_clone(self, v, user):
        node, vmid, newid = v["node"], int(v["vmid"]), int(v["newid"])
        pool, storage, fmt, target = v.get("pool"), v.get("storage"), v.get("format"), v.get("target")
        # clone_vm's permissions: VM.Clone on the source, VM.Allocate on the new id or the pool
        self.require(user, f"/vms/{vmid}", "VM.Clone")
        self._qm_check_pool(pool)
        self._qm_perm(user, newid, pool, "VM.Allocate")
        if target in (node, "localhost"):
            target = None
        if target and target not in self.nodes:
            raise die(f"no such cluster node '{target}'")
        if storage:
            store = self._store(storage)
            if "images" not in str(store.get("content", "")).split(","):
                raise param_error(storage=f"storage '{storage}' does not support vm images")
        self.need_quorum()
        src = self.find(node, vmid)
        self._check_lock(src)
        snapname = v.get("snapname")
        if snapname and snapname not in src.snapshots:
            raise die(f"snapshot '{snapname}' does not exist")
        full = str(v["full"]).lower() in ("1", "true") if v.get("full") is not None else not src.template
        if storage and not full:
            raise die("parameter 'storage' not allowed for linked clones")
        if fmt and not full:
            raise die("parameter 'format' not allowed for linked clones")
        if self._qm_taken(newid):
            raise die(f"unable to create VM {newid}: config file already exists")
        old = src.snapshots[snapname] if snapname else src.config
        newconf: dict[str, Any] = {}
        plan: dict[str, tuple[str, dict[str, str], str]] = {}  # drive -> (volume, options, how: cloudinit|full|linked)
        for opt in sorted(old):
            value = old[opt]
            if opt in CLONE_SKIP or re.fullmatch(r"unused\d+", opt):
                continue
            if re.fullmatch(r"net\d+", opt):
                newconf[opt] = with_mac(value, fresh=True)  # always a new MAC
                continue
            if not DRIVE_KEY.match(opt):
                newconf[opt] = value
                continue
            volume, props = split_drive(str(value))
            cloudinit = is_cloudinit(volume)
            if (is_cdrom(volume, props) and not cloudinit) or volume_ref(volume)[0] is None:
                newconf[opt] = value  # drive_is_cdrom($drive, 1): the configuration is copied
                continue
            sid = volume_ref(volume)[0]
            if sid not in self.storages:
                raise die(f"storage '{sid}' does not exist")
            if cloudinit:
                plan[opt] = (volume, props, "cloudinit")
            elif full:
                plan[opt] = (volume, props, "full")
            elif not volume_ref(volume)[1].rsplit("/", 1)[-1].startswith("base-"):
                raise die(f"Linked clone feature is not supported for {'a snapshot of ' if snapname else ''}'{volume}' ({opt})")
            else:
                plan[opt] = (volume, props, "linked")
        for volume, _props, _how in plan.values():
            self.require(user, "/storage/" + (storage or str(volume_ref(volume)[0])), "Datastore.AllocateSpace")
        for sid in {storage or volume_ref(volume)[0] for volume, _p, _h in plan.values()}:
            if self._rbd(sid):
                await self._rbd_status(sid)
                await self._rbd_sync(sid, sizes=False)
        new = FakeVm(newid, v.get("name") or f"Copy-of-VM-{src.config.get('name') or vmid}", node=node)
        new.config = dict(newconf, name=new.name)
        if v.get("description"):
            new.config["description"] = v["description"]
        self._qm_lock(new, "clone")
        self.vms.append(new)
        made: list[str] = []

        async def body():
            try:
                for opt in sorted(plan):
                    volume, props, how = plan[opt]
                    volid, size = await self._clone_disk(volume, how, newid, storage, fmt)
                    made.append(volid)
                    shown = dict(props)
                    shown.pop("format", None)
                    if how != "cloudinit":
                        shown["size"] = format_size(size)
                    new.config[opt] = join_drive(volid, shown)
                    await self._flush_made()  # this disk's Ceph work now, before the clone is written
                smbios = split_props("x," + str(new.config.get("smbios1", "")))[1]
                smbios["uuid"] = str(uuid.uuid4())
                new.config["smbios1"] = ",".join(f"{k}={smbios[k]}" for k in sorted(smbios))
                if new.config.get("vmgenid"):
                    new.config["vmgenid"] = str(uuid.uuid4())
            except (PveError, TaskError) as exc:
                for volid in made:
                    self._qm_free(volid)
                if new in self.vms:
                    self.vms.remove(new)
                raise TaskError(f"clone failed: {getattr(exc, 'message', None) or exc}") from exc
            self._qm_lock(new, None)
            if pool:
                self._pool_join(pool, newid)
            if target:
                new.node = target
            return None

        return await self.task(
            node, "qmclone", vmid, user, body, vm=new, lock=False, log=[f"create {'full' if full else 'linked'} clone of VM {vmid} to {newid}"]
        )

    async def _flush_made(self) -> None:
        """The task's pending Ceph work but the removals, done now (a failure: TaskError)."""
        ops = OPS.get() or []
        made = [op for op in ops if op[0] != "remove"]
        ops[:] = [op for op in ops if op[0] == "remove"]
        await self._run_ops(made, [])

    async def _clone_disk(self, volume: str, how: str, newid: int, storage: str | None, fmt: str | None) -> tuple[str, int]:
        """clone_disk: (the new volume, its size in bytes)."""
        sid, volname = volume_ref(volume)
        dest = storage or sid
        if how == "cloudinit":
            return self._alloc_named(dest, newid, f"vm-{newid}-cloudinit", CLOUDINIT_SIZE), CLOUDINIT_SIZE
        size = await self._volume_size(sid, volname)
        if how == "linked":
            base = volname.rsplit("/", 1)[-1]
            name = self._qm_free_name(sid, newid, "raw")
            new_volname = f"{base}/{name}" if self._rbd(sid) else name
            self.storages[sid].setdefault("volumes", {})[new_volname] = {
                "content": "images",
                "format": "raw",
                "size": size,
                "vmid": newid,
                "ctime": int(time.time()),
            }
            if self._rbd(sid):
                self._ops().append(("clone", sid, base, name, dict(self.storages[sid])))
            return f"{sid}:{new_volname}", size
        volid, _fmt = self._qm_alloc(dest, newid, fmt, size)
        if self._rbd(sid) or self._rbd(dest):
            if dest != sid:
                raise TaskError(f"the lab copies a full clone's data within one RBD storage only ('{sid}' to '{dest}')")
            self._ops().append(("copy", sid, volname.rsplit("/", 1)[-1], volume_ref(volid)[1], dict(self.storages[sid])))
        return volid, size

    async def _volume_size(self, sid: str, volname: str) -> int:
        """volume_size_info of the source: asked of Ceph for an RBD volume."""
        if self._rbd(sid):
            try:
                return await self.ceph_access.image_size(sid, self.storages[sid], volname.rsplit("/", 1)[-1])
            except RbdError as exc:
                raise TaskError(str(exc)) from None
        return int((self._volumes(sid).get(volname) or {}).get("size") or 0)
