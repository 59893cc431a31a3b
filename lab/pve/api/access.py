"""/access: users, API tokens, roles and ACLs, and the permission model every other call is
checked with, as PVE computes it (pve-access-control):

- **Roles** (src/PVE/AccessControl.pm `$privgroups`, `create_roles`): the built-in roles
  (Administrator, NoAccess, PVEAdmin, PVEAuditor, PVE<Group>Admin / PVE<Group>User,
  PVETemplateUser) with their privileges, and the roles `POST /access/roles` adds.
- **ACLs** (`PUT /access/acl`): path, user / token / group, role, propagate (default 1).
  `AccessControl::roles` walks the path from `/` down: at each level an entry for the token,
  else the user, else the user's groups *replaces* what came from above, when the level is the
  path itself or the entry propagates; a `NoAccess` role wins over the rest.
- **Permissions** (src/PVE/RPCEnvironment.pm `permissions`, `$compile_acl_path`): root@pam holds
  every privilege; a token without privilege separation holds its user's; a privilege-separated
  token holds the privileges both it and its user hold (the intersection). A VM or storage in a
  resource pool adds the pool's roles, without propagation.
- `GET /access/permissions` (src/PVE/API2/AccessControl.pm `permissions`): with `path`, the
  privileges on that path; without, `get_effective_permissions`: for `/`, the top-level paths,
  every path that has an ACL and the pool members, those where anything is held; each privilege
  maps to its propagate flag.
- PVE drops the ACLs of a VM when the VM is destroyed (qemu-server API2/Qemu.pm destroy_vm:
  `remove_vm_access`) and of a storage when its definition is deleted
  (pve-storage API2/Storage/Config.pm delete: `remove_storage_access`).

A 403 carries PVE's wording: `Permission check failed (<path>, <privilege>)` (RPCEnvironment
`check_full`, raise_perm_exc). fakepve's handlers ask `allowed()` for every check; this mixin
answers it with the model above.
"""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

from fakepve.model import PveError

# AccessControl.pm $privgroups: category -> (root, admin, user, audit) privileges.
PRIVGROUPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "VM": (
        (),
        (
            "VM.Config.Disk",
            "VM.Config.CPU",
            "VM.Config.Memory",
            "VM.Config.Network",
            "VM.Config.HWType",
            "VM.Config.Options",
            "VM.Allocate",
            "VM.Clone",
            "VM.GuestAgent.Unrestricted",
            "VM.Migrate",
            "VM.Replicate",
            "VM.Snapshot",
            "VM.Snapshot.Rollback",
        ),
        (
            "VM.Config.CDROM",
            "VM.Config.Cloudinit",
            "VM.Console",
            "VM.Backup",
            "VM.GuestAgent.FileRead",
            "VM.GuestAgent.FileSystemMgmt",
            "VM.GuestAgent.FileWrite",
            "VM.PowerMgmt",
        ),
        ("VM.Audit", "VM.GuestAgent.Audit"),
    ),
    "Sys": (("Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"), ("Sys.Console", "Sys.Syslog"), (), ("Sys.Audit",)),
    "Datastore": ((), ("Datastore.Allocate", "Datastore.AllocateTemplate"), ("Datastore.AllocateSpace",), ("Datastore.Audit",)),
    "SDN": ((), ("SDN.Allocate", "SDN.Audit"), ("SDN.Use",), ("SDN.Audit",)),
    "User": (("Realm.Allocate",), ("User.Modify", "Group.Allocate", "Realm.AllocateUser"), (), ()),
    "Pool": ((), ("Pool.Allocate",), ("Pool.Audit",), ("Pool.Audit",)),
    "Mapping": ((), ("Mapping.Modify",), ("Mapping.Use",), ("Mapping.Audit",)),
}


def builtin_roles() -> dict[str, set[str]]:
    """AccessControl.pm create_roles: the special roles and their privileges."""
    valid = {"Permissions.Modify"} | {p for groups in PRIVGROUPS.values() for group in groups for p in group}
    roles: dict[str, set[str]] = {"NoAccess": set(), "Administrator": set(valid), "PVEAdmin": set(), "PVEAuditor": set()}
    for cat, (_root, admin, user, audit) in PRIVGROUPS.items():
        roles.setdefault(f"PVE{cat}Admin", set()).update(admin, user, audit)
        roles["PVEAdmin"].update(admin, user, audit)
        if user:
            roles.setdefault(f"PVE{cat}User", set()).update(user, audit)
        roles["PVEAuditor"].update(audit)
    roles["PVEAdmin"].discard("Mapping.Modify")
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    return roles


BUILTIN = builtin_roles()
VALID_PRIVS = frozenset(BUILTIN["Administrator"])
TOP_PATHS = ("/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms")
ROLE_ID = re.compile(r"^[A-Za-z0-9.\-_]+$")


def split_list(text: Any) -> list[str]:
    """PVE's list formats (privileges, role ids, user and token ids): separated by commas, semicolons or spaces."""
    return [p for p in re.split(r"[,;\s]+", str(text or "")) if p]


def normalize_path(path: str) -> str:
    """AccessControl.pm normalize_path: no double or trailing slashes."""
    path = "/" + "/".join(part for part in str(path).split("/") if part)
    return path


class AccessApi:
    """Mixin of LabPve: the permission model and the /access calls that set it up."""

    def init_access(self, tokens: dict[str, bool]) -> None:
        """Roles, users and ACLs as a fresh PVE has them, plus TOKENS (tokenid -> privsep) whose
        secrets fakepve's apitokens already hold (the lab's own root token)."""
        self.access_roles: dict[str, set[str]] = {name: set(privs) for name, privs in BUILTIN.items()}
        self.access_users: dict[str, dict[str, Any]] = {"root@pam": {"tokens": {}, "groups": set()}}
        self.access_groups: dict[str, set[str]] = {}
        # path -> {"users"|"tokens"|"groups": {ugid: {roleid: propagate}}}
        self.access_acl: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
        for tokenid, privsep in tokens.items():
            userid, _, name = tokenid.partition("!")
            self.access_users.setdefault(userid, {"tokens": {}, "groups": set()})["tokens"][name] = {"privsep": int(privsep)}
        self.acl = {}  # fakepve checks permissions once its ACL is not None

    # ------------------------------------------------------------------ the model

    def _token_info(self, tokenid: str) -> dict[str, Any] | None:
        userid, _, name = tokenid.partition("!")
        return (self.access_users.get(userid) or {}).get("tokens", {}).get(name)

    def _roles(self, who: str, path: str) -> dict[str, int]:
        """AccessControl.pm roles: role -> propagate flag of WHO (a user or a token) on PATH."""
        roles: dict[str, int] = {}
        parts = [""] if path == "/" else path.split("/")
        current = ""
        kind = "tokens" if "!" in who else "users"
        userid = who.split("!")[0]
        for i, part in enumerate(parts):
            final = i == len(parts) - 1
            current = "/" if part == "" and i == 0 else (current.rstrip("/") + "/" + part)
            entry = self.access_acl.get(current)
            if not entry:
                continue
            new = {r: p for r, p in (entry.get(kind, {}).get(who) or {}).items() if final or p}
            if new:
                roles = new  # overwrite previous settings
                continue
            if kind == "tokens":
                continue  # a token's own ACLs only; its user's are intersected in permissions()
            new = {}
            for group, assigned in entry.get("groups", {}).items():
                if userid in self.access_groups.get(group, set()):
                    new.update({r: p for r, p in assigned.items() if final or p})
            if new:
                roles = new
        if "NoAccess" in roles:
            return {"NoAccess": roles["NoAccess"]}
        return roles

    def _pool_roles(self, who: str, path: str) -> dict[str, int]:
        """$compile_acl_path: the roles a VM or storage gets from the resource pool it is in (never propagating)."""
        out: dict[str, int] = {}
        pools = getattr(self, "pools", {}) or {}
        info = getattr(self, "pool_info", {}) or {}
        for name, members in pools.items():
            member = False
            if path.startswith("/vms/"):
                member = path.split("/")[2] in {str(m) for m in members}
            elif path.startswith("/storage/"):
                member = path.split("/")[2] in (info.get(name) or {}).get("storage", set())
            if member:
                out.update(dict.fromkeys(self._roles(who, f"/pool/{name}"), 0))
        return out

    def _privs(self, who: str, path: str) -> dict[str, int]:
        roles = self._roles(who, path)
        pooled = self._pool_roles(who, path)
        if pooled and "NoAccess" not in roles:
            if "NoAccess" in pooled:
                roles = {"NoAccess": 0}
            else:
                for role in pooled:
                    roles.setdefault(role, 0)
        privs: dict[str, int] = {}
        for role, propagate in roles.items():
            for priv in self.access_roles.get(role, set()):
                privs[priv] = privs.get(priv, 0) or propagate
        return privs

    def permissions(self, who: str, path: str) -> dict[str, int]:
        """RPCEnvironment.pm permissions: privilege -> propagate flag of WHO on PATH."""
        path = normalize_path(path)
        if who == "root@pam":
            return dict.fromkeys(self.access_roles["Administrator"], 1)
        if "!" in who:
            info = self._token_info(who)
            if info is None:
                return {}
            userid = who.split("!")[0]
            user_privs = self.permissions(userid, path)
            if not info.get("privsep"):
                return user_privs
            own = self._privs(who, path)
            return {p: int(bool(user_privs[p] and own[p])) for p in own if p in user_privs}
        if who not in self.access_users:
            return {}
        return self._privs(who, path)

    def effective_permissions(self, who: str) -> dict[str, dict[str, int]]:
        """RPCEnvironment.pm get_effective_permissions."""
        paths = dict.fromkeys(TOP_PATHS)
        paths.update(dict.fromkeys(self.access_acl))
        for name, members in (getattr(self, "pools", {}) or {}).items():
            paths.update(dict.fromkeys(f"/vms/{m}" for m in members))
            paths.update(dict.fromkeys(f"/storage/{s}" for s in ((getattr(self, "pool_info", {}) or {}).get(name) or {}).get("storage", set())))
        out = {}
        for path in paths:
            held = self.permissions(who, path)
            if held:
                out[path] = held
        return out

    def allowed(self, user, path, priv):
        """fakepve's question for every check: does USER hold PRIV on PATH (PVE's model above)."""
        if user is None:
            return False
        try:
            return priv in self.permissions(user, path)
        except (ValueError, IndexError):
            return False

    def remove_vm_access(self, vmid: int | str) -> None:
        """AccessControl.pm remove_vm_access: a destroyed VM's ACLs go with it."""
        self.access_acl.pop(f"/vms/{vmid}", None)

    def remove_storage_access(self, storeid: str) -> None:
        """AccessControl.pm remove_storage_access: a deleted storage's ACLs go with it."""
        self.access_acl.pop(f"/storage/{storeid}", None)

    # ------------------------------------------------------------------ routes

    def _routes_access(self):
        return [
            ("GET", "/access/permissions", self._permissions),
            ("GET", "/access/roles", self._roles_list),
            ("POST", "/access/roles", self._role_create),
            ("GET", "/access/roles/{roleid}", self._role_get),
            ("PUT", "/access/roles/{roleid}", self._role_update),
            ("DELETE", "/access/roles/{roleid}", self._role_delete),
            ("GET", "/access/acl", self._acl_list),
            ("PUT", "/access/acl", self._acl_update),
            ("GET", "/access/users", self._users_list),
            ("POST", "/access/users", self._user_create),
            ("POST", "/access/users/{userid}/token/{tokenid}", self._token_create),
            ("DELETE", "/access/users/{userid}/token/{tokenid}", self._token_delete),
        ]

    async def _permissions(self, v, user):
        """API2/AccessControl.pm permissions: another user's only with Sys.Audit on /access, or a token of one's own."""
        who = v.get("userid") or user
        own_token = who.split("!")[0] == user.split("!")[0] and "!" in who and "!" not in user
        if who != user and not own_token and not self.allowed(user, "/access", "Sys.Audit"):
            raise PveError(403, "Permission check failed (/access, Sys.Audit)")
        if v.get("path") is not None:
            path = normalize_path(v["path"])
            held = self.permissions(who, path)
            return {path: held} if held else {}
        return self.effective_permissions(who)

    def _check_privs(self, privs: list[str]) -> None:
        for priv in privs:
            if priv not in VALID_PRIVS:
                raise PveError(500, f"invalid privilege '{priv}'")

    async def _roles_list(self, v, user):
        return [{"roleid": r, "privs": ",".join(sorted(p)), "special": int(r in BUILTIN)} for r, p in sorted(self.access_roles.items())]

    async def _role_create(self, v, user):
        """API2/Role.pm create_role: no role id in PVE's namespace."""
        roleid = v["roleid"]
        if roleid.upper().startswith("PVE"):
            raise PveError(400, "Parameter verification failed.", {"roleid": "cannot use role ID starting with the (case-insensitive) 'PVE' namespace"})
        if not ROLE_ID.match(roleid):
            raise PveError(400, "Parameter verification failed.", {"roleid": f"role name '{roleid}' contains invalid characters"})
        if roleid in self.access_roles:
            raise PveError(500, f"create role failed: role '{roleid}' already exists")
        privs = split_list(v.get("privs"))
        self._check_privs(privs)
        self.access_roles[roleid] = set(privs)
        return None

    def _role(self, roleid: str) -> set[str]:
        if roleid not in self.access_roles:
            raise PveError(500, f"role '{roleid}' does not exist")
        return self.access_roles[roleid]

    async def _role_get(self, v, user):
        return dict.fromkeys(sorted(self._role(v["roleid"])), 1)

    async def _role_update(self, v, user):
        roleid = v["roleid"]
        self._role(roleid)
        if roleid in BUILTIN:
            raise PveError(500, f"update role failed: cannot modify special role '{roleid}'")
        privs = split_list(v.get("privs"))
        self._check_privs(privs)
        if v.get("append"):
            self.access_roles[roleid].update(privs)
        else:
            self.access_roles[roleid] = set(privs)
        return None

    async def _role_delete(self, v, user):
        roleid = v["roleid"]
        self._role(roleid)
        if roleid in BUILTIN:
            raise PveError(500, f"cannot delete special role '{roleid}'")
        del self.access_roles[roleid]
        for entry in self.access_acl.values():
            for assigned in entry.values():
                for roles in assigned.values():
                    roles.pop(roleid, None)
        return None

    async def _acl_list(self, v, user):
        out = []
        for path, entry in sorted(self.access_acl.items()):
            for kind, ugtype in (("users", "user"), ("groups", "group"), ("tokens", "token")):
                for ugid, roles in sorted(entry.get(kind, {}).items()):
                    for roleid, propagate in sorted(roles.items()):
                        out.append({"path": path, "type": ugtype, "ugid": ugid, "roleid": roleid, "propagate": propagate})
        return out

    async def _acl_update(self, v, user):
        """API2/ACL.pm update_acl."""
        path = normalize_path(v["path"])
        roles = split_list(v.get("roles"))
        for roleid in roles:
            self._role(roleid)
        users, tokens, groups = split_list(v.get("users")), split_list(v.get("tokens")), split_list(v.get("groups"))
        if not (users or tokens or groups):
            raise PveError(500, "either 'users', 'groups' or 'tokens' is required")
        for userid in users:
            if userid not in self.access_users:
                raise PveError(500, f"user '{userid}' does not exist")
        for tokenid in tokens:
            if self._token_info(tokenid) is None:
                raise PveError(500, f"no such token '{tokenid.split('!', 1)[-1]}' for user '{tokenid.split('!')[0]}'")
        for group in groups:
            if group not in self.access_groups:
                raise PveError(500, f"group '{group}' does not exist")
        propagate = 0 if str(v.get("propagate", 1)).lower() in ("0", "false") else 1
        delete = str(v.get("delete", 0)).lower() in ("1", "true")
        entry = self.access_acl.setdefault(path, {})
        for kind, ids in (("users", users), ("tokens", tokens), ("groups", groups)):
            for ugid in ids:
                assigned = entry.setdefault(kind, {}).setdefault(ugid, {})
                for roleid in roles:
                    if delete:
                        assigned.pop(roleid, None)
                    else:
                        assigned[roleid] = propagate
                if not assigned:
                    entry[kind].pop(ugid)
        if not any(entry.values()):
            self.access_acl.pop(path, None)
        return None

    async def _users_list(self, v, user):
        return [
            {"userid": u, "enable": 1, "expire": 0, "tokens": [{"tokenid": t, "privsep": i["privsep"], "expire": 0} for t, i in sorted(d["tokens"].items())]}
            for u, d in sorted(self.access_users.items())
        ]

    async def _user_create(self, v, user):
        userid = v["userid"]
        if userid in self.access_users:
            raise PveError(500, f"create user failed: user '{userid}' already exists")
        self.access_users[userid] = {"tokens": {}, "groups": set()}
        return None

    async def _token_create(self, v, user):
        """API2/User.pm generate_token: the secret is shown once, in `value`."""
        userid, name = v["userid"], v["tokenid"]
        if userid not in self.access_users:
            raise PveError(500, f"no such user ('{userid}')")
        tokens = self.access_users[userid]["tokens"]
        if name in tokens:
            raise PveError(500, "Token already exists.")
        privsep = 0 if str(v.get("privsep", 1)).lower() in ("0", "false") else 1
        tokens[name] = {"privsep": privsep}
        secret = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        full = f"{userid}!{name}"
        self.apitokens[full] = secret
        return {"full-tokenid": full, "info": {"privsep": privsep, "expire": 0}, "value": secret}

    async def _token_delete(self, v, user):
        userid, name = v["userid"], v["tokenid"]
        tokens = (self.access_users.get(userid) or {}).get("tokens", {})
        if name not in tokens:
            raise PveError(500, f"no such token '{name}' for user '{userid}'")
        del tokens[name]
        full = f"{userid}!{name}"
        self.apitokens.pop(full, None)
        for entry in self.access_acl.values():
            entry.get("tokens", {}).pop(full, None)
        return None
