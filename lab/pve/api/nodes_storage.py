"""/nodes/{node}/storage: fakepve's handlers (pve-storage src/PVE/API2/Storage/Status.pm and
Content.pm) on the lab's storages:

- `local` (dir, /var/lib/vz, content iso,vztmpl,backup: a default PVE node's storage.cfg) holds
  the ISO images the lab was started with, as after an upload (`seed_isos`): GET .../content
  lists them with Content.pm's fields (volid, content, format iso, size, ctime), so a VM whose
  cdrom names `local:iso/debian-12.iso` can be made as the lab stack writes it;
- RBD storages answer from the real Ceph: status (active, total/used/avail from the pool's
  `df`), inactive with rbd's reason when the key or caps are wrong; their content is what the
  pool holds (`rbd ls -l`, PVE lists the pool, not a cache); GET .../content/{volume} asks Ceph
  about that one image (`rbd info`: Content.pm `info` -> volume_size_info -> RBDPlugin
  rbd_volume_info), after the access check, never the whole pool; POST .../content makes a real
  image, DELETE .../content/{volume} removes it.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from fakepve.model import TaskError
from fakepve.routing import die

from lab.pve.api.tasks import AFTER
from lab.pve.rbdstore import RbdError


def _seen(volumes: dict[str, Any], volname: str, size: int | None) -> None:
    """VOLNAME is in the pool (SIZE in bytes, None when only its name was asked): a VM's volume is
    added, or its size brought up to date; a volume not named as PVE names volumes is skipped.
    A linked clone's volume is `base-N-disk-M/vm-X-disk-K` (rbdstore.volume_name), owned by X;
    asked by its image's name alone, it is the volume already known under its full name."""
    image = volname.rsplit("/", 1)[-1]
    found = re.match(r"^(?:base|vm|subvol)-(\d+)-", image)
    if found is None:
        return
    known = next((name for name in volumes if name == volname or name.rsplit("/", 1)[-1] == image), None)
    if known is None:
        volumes[volname] = {"content": "images", "format": "raw", "size": size or 0, "vmid": int(found.group(1)), "ctime": int(time.time())}
    elif size is not None:
        volumes[known]["size"] = size


class NodesStorageApi:
    """Mixin of LabPve: /nodes/{node}/storage and the RBD storages' state."""

    def seed_isos(self, isos: dict[str, int]) -> None:
        """ISO images on `local`, as `pvesm`/the GUI upload leaves them (fakepve store_file)."""
        for name, size in isos.items():
            self.store_file("local", name, int(size), "iso")

    def seed_imports(self, files: dict[str, str]) -> None:
        """Disk images on `local` for import (`local:import/<name>`, lab/pve/imports.py): their
        volumes, and the real files behind them, which an `import-from` reads. `local` lists
        `import` among its contents, as after `pvesm set local --content iso,vztmpl,backup,import`."""
        from lab.pve import imports

        local = self.storages["local"]
        if "import" not in str(local.get("content", "")).split(","):
            local["content"] = f"{local.get('content')},import"
        for name, path in files.items():
            self.store_file("local", name, imports.virtual_size(path), "import")
            self.import_files[f"import/{name}"] = path

    async def _rbd_status(self, sid: str, refresh: bool = False) -> dict[str, Any] | None:
        store = self.storages.get(sid)
        if store is None or store.get("type") != "rbd":
            return None
        status = await self.ceph_access.status(sid, store, refresh=refresh)
        if sid in self.storages:
            self.storages[sid]["active"] = status["active"]
        return status

    async def _rbd_sync(self, sid: str, sizes: bool = True) -> None:
        """Make the storage's volumes what the pool holds (PVE lists the pool, not a cache).

        ``sizes``: as a listing does (`rbd ls -l`, which opens every image); without, the names
        alone (`rbd ls`), as PVE asks them before it allocates a disk (RBDPlugin alloc_image ->
        find_free_diskname): a new volume's size is then the allocation's own."""
        store = self.storages.get(sid)
        if store is None or store.get("type") != "rbd":
            return
        try:
            if sizes:
                images: dict[str, int | None] = dict(await self.ceph_access.list_images(sid, store))
            else:
                images = dict.fromkeys(await self.ceph_access.image_names(sid, store))
        except RbdError as exc:
            raise die(str(exc)) from None
        volumes = store.setdefault("volumes", {})
        for name in list(volumes):
            if name not in images:
                del volumes[name]
        for name, size in images.items():
            _seen(volumes, name, size)

    async def _rbd_sync_volume(self, sid: str, volname: str) -> None:
        """Make one volume what the pool holds (its size), or fail as PVE fails when rbd cannot
        tell (the image gone, the storage's client refused): RbdError's words."""
        store = self.storages[sid]
        image = volname.rsplit("/", 1)[-1]  # a linked clone's `base-X-disk-N/vm-Y-disk-M`: the image is the last part (RBDPlugin parse_volname)
        volumes = store.setdefault("volumes", {})
        try:
            size = await self.ceph_access.image_size(sid, store, image)
        except RbdError as exc:
            if exc.enoent:
                for name in [n for n in volumes if n.rsplit("/", 1)[-1] == image]:
                    del volumes[name]
            raise die(str(exc)) from None
        _seen(volumes, volname, size)

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
            # Content.pm checks the volume's access first, then asks Ceph about that image alone
            sid, volname, volid, _store, vtype, owner, _fmt = self._volume_target(v)
            self._check_access(user, sid, vtype, owner, volid)
            await self._rbd_sync_volume(sid, volname)
        return await super()._content_info(v, user)

    async def _content_create(self, v, user):
        sid = v["storage"]
        if self.storages.get(sid, {}).get("type") != "rbd":
            return await super()._content_create(v, user)
        await self._rbd_status(sid)
        await self._rbd_sync(sid, sizes=False)
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

        token = AFTER.set([remove])
        try:
            return await super()._content_delete(v, user)
        finally:
            AFTER.reset(token)
