"""/storage (storage.cfg): fakepve's handlers (pve-storage src/PVE/API2/Storage/Config.pm) with what
an RBD storage on external Ceph adds:

- `shared: 1` for rbd, as PVE reports it (RBDPlugin is shared by nature);
- the keyring is kept apart from storage.cfg (Config.pm extract_sensitive_params: PVE writes
  it to /etc/pve/priv/ceph/<storage>.keyring, 0400) and is never read back or logged;
- `active` is checked against the real Ceph with the storage's monhost, user and keyring
  (rbdstore.py), in the background after every create and update;
- a deleted storage's ACLs go with it (Config.pm delete: `remove_storage_access`).
"""

from __future__ import annotations


class StorageConfigApi:
    """Mixin of LabPve: POST /storage, PUT and DELETE /storage/{storage}."""

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
        self.remove_storage_access(v["storage"])  # Config.pm delete: PVE::AccessControl::remove_storage_access
        return result
