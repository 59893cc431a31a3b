"""/cluster/ha: resources, groups (PVE 8), rules (PVE 9), status/current, status/manager_status.

After pve-ha-manager src/PVE/API2/HA/{Resources,Groups,Rules,Status}.pm, with PVE's error texts
(the ones fakepve's error catalogue lists for these methods): a missing resource is 500
`no such resource 'vm:102'` (Resources.pm $api_copy_config), which bpg's client reads as "does
not exist" (proxmox/api/client.go). The data lives in the HA manager (ha.py, a model module).

PVE 9 ("rules" mode) migrated groups to rules: every groups method is refused with PVE's
"... ha groups have been migrated to rules". PVE 8 ("groups" mode) has no rules API at all:
those paths answer as PVE answers a method it has no handler for (501 "Method 'GET
/cluster/ha/rules/' not implemented", the path as the client sent it: router.py).

bpg's client POSTs to `cluster/ha/resources/` (and `.../groups/`, `.../rules/`) with the
trailing slash; the router (router.py) makes that the same path as PVE does.
"""

from __future__ import annotations

import re
from typing import Any

from fakepve.model import PveError

from lab.pve.ha import affinity, encode_node_list, parse_node_list, sid_parts, split_list

DIGEST_CHANGED = "detected modified configuration - file changed by other user? Try again."
NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"


def die(message: str) -> PveError:
    return PveError(500, message)


def bool_int(value: Any) -> int:
    return 1 if str(value).lower() in ("1", "true", "yes", "on") else 0


class ClusterHaApi:
    """Mixin of LabPve: the /cluster/ha routes (the `_routes_<x>` extension point of fakepve)."""

    def _routes_ha(self):
        res, grp, rul, st = ("/cluster/ha/resources", "/cluster/ha/groups", "/cluster/ha/rules", "/cluster/ha/status")
        return [
            ("GET", "/cluster/ha", self._ha_index),
            ("GET", res, self._ha_res_list),
            ("POST", res, self._ha_res_create),
            ("GET", res + "/{sid}", self._ha_res_read),
            ("PUT", res + "/{sid}", self._ha_res_update),
            ("DELETE", res + "/{sid}", self._ha_res_delete),
            ("POST", res + "/{sid}/migrate", self._ha_res_migrate),
            ("POST", res + "/{sid}/relocate", self._ha_res_relocate),
            ("GET", grp, self._ha_grp_list),
            ("POST", grp, self._ha_grp_create),
            ("GET", grp + "/{group}", self._ha_grp_read),
            ("PUT", grp + "/{group}", self._ha_grp_update),
            ("DELETE", grp + "/{group}", self._ha_grp_delete),
            ("GET", rul, self._ha_rule_list),
            ("POST", rul, self._ha_rule_create),
            ("GET", rul + "/{rule}", self._ha_rule_read),
            ("PUT", rul + "/{rule}", self._ha_rule_update),
            ("DELETE", rul + "/{rule}", self._ha_rule_delete),
            ("GET", st, self._ha_status_index),
            ("GET", st + "/current", self._ha_status_current),
            ("GET", st + "/manager_status", self._ha_manager_status),
        ]

    # ------------------------------------------------------------------ helpers

    def _ha_local(self) -> str:
        return self.current_node()

    def _ha_parse_sid(self, sid: str) -> tuple[str, str, str]:
        """PVE::HA::Config::parse_sid."""
        sid = str(sid)
        if re.fullmatch(r"\d+", sid):
            guest = self.guest(int(sid))
            if guest is None:
                raise die(f"unable to detect SID from VMID - VM/CT {sid} does not exist")
            kind = "vm" if guest in self.vms else "ct"
            return f"{kind}:{sid}", kind, sid
        found = re.fullmatch(r"(\S+):(\S+)", sid)
        if not found:
            raise die(f"unable to parse service id '{sid}'")
        kind, name = found.group(1), found.group(2)
        if kind not in ("vm", "ct"):
            raise die(f"unknown PVE resource type '{kind}'")
        return sid, kind, name

    def _ha_copy(self, sid: str) -> dict[str, Any]:
        if sid not in self.ha.resources:
            raise die(f"no such resource '{sid}'")
        data = dict(self.ha.resources[sid])
        if self.mode == "rules":
            data.pop("group", None)
        kind, _ = sid_parts(sid)
        data.update(sid=sid, type=kind, digest=self.ha.digest("resources"))
        return data

    def _ha_check_state(self, sid: str, req_state: str | None) -> None:
        sd = self.ha.ss.get(sid)
        if sd and sd.get("state") == "error" and req_state != "disabled":
            raise die(f"service '{sid}' in error state, must be disabled and fixed first")

    def _ha_options(self, values: dict[str, Any], create: bool) -> dict[str, Any]:
        """check_config of the resource plugins: the options as stored."""
        out: dict[str, Any] = {}
        for key in ("state", "group", "max_restart", "max_relocate", "failback", "comment", "auto-rebalance"):
            if values.get(key) is None:
                continue
            if key in ("failback", "auto-rebalance") and self.mode == "groups":
                raise PveError(400, "Parameter verification failed.", {key: NOT_IN_SCHEMA})
            value = values[key]
            if key in ("max_restart", "max_relocate"):
                value = int(value)
            elif key in ("failback", "auto-rebalance"):
                value = bool_int(value)
            out[key] = value
        return out

    def _ha_need_groups_api(self, verb: str) -> None:
        if self.mode == "rules":
            raise die(f"cannot {verb}: ha groups have been migrated to rules")

    def _ha_need_rules_api(self, method: str, path: str) -> None:
        """PVE 8 has no /cluster/ha/rules: pve-manager PVE/HTTPServer.pm rest_handler's 501 with the
        path as sent after /api2/json (PATH when the call came through the control channel)."""
        if self.mode != "rules":
            raise PveError(501, f"Method '{method} {self.sent_rel_uri() or path}' not implemented")

    # ------------------------------------------------------------------ index

    async def _ha_index(self, v, user):
        return [{"id": "status"}, {"id": "resources"}, {"id": "groups"}, {"id": "rules"}]

    async def _ha_status_index(self, v, user):
        return [{"name": "current"}, {"name": "manager_status"}]

    # ------------------------------------------------------------------ resources

    async def _ha_res_list(self, v, user):
        out = []
        for sid in self.ha.resources:
            data = self._ha_copy(sid)
            if v.get("type") and v["type"] != data["type"]:
                continue
            if self.mode == "groups" and data.get("group") and data["group"] not in self.ha.groups:
                data["errors"] = {"group": f"group '{data['group']}' does not exist"}
            out.append(data)
        return out

    async def _ha_res_read(self, v, user):
        sid, _kind, _name = self._ha_parse_sid(v["sid"])
        return self._ha_copy(sid)

    async def _ha_res_create(self, v, user):
        self.need_quorum()
        sid, kind, name = self._ha_parse_sid(v["sid"])
        if v.get("type") and v["type"] != kind:
            raise die("types does not match")
        if v.get("group") is not None and self.mode == "rules":
            raise die("invalid parameter 'group': ha groups have been migrated to rules")
        guest = self.guest(int(name)) if name.isdigit() else None
        if kind == "vm":
            if guest is None:
                raise die(f"resource 'vm:{name}' does not exist in cluster")
            if guest not in self.vms:
                raise die(f"resource 'vm:{name}' - guest with ID {name} is not a VM")
        elif guest is None:
            raise die(f"resource 'ct:{name}' does not exist in cluster")
        opts = self._ha_options(v, True)
        if sid in self.ha.resources:
            raise die(f"create resource failed: resource ID '{sid}' already defined")
        self.ha.resources[sid] = dict(opts, type=kind)
        self.ha.update_vm_state(sid)
        self.ha.wake()
        return None

    async def _ha_res_update(self, v, user):
        sid, kind, _name = self._ha_parse_sid(v["sid"])
        if v.get("type") and v["type"] != kind:
            raise die("types does not match")
        if v.get("group"):
            if self.mode == "rules":
                raise die("invalid parameter 'group': ha groups have been migrated to rules")
            if v["group"] not in self.ha.groups:
                raise die(f"HA group '{v['group']}' does not exist")
        self._ha_check_state(sid, v.get("state"))
        fail = "update resources config failed: "
        if v.get("digest") and v["digest"] != self.ha.digest("resources"):
            raise die(fail + DIGEST_CHANGED)
        if sid not in self.ha.resources:
            raise die(fail + f"no such resource '{sid}'")
        opts = self._ha_options(v, False)
        deletes = split_list(v.get("delete"))
        known = ("state", "group", "max_restart", "max_relocate", "failback", "comment", "auto-rebalance")
        for key in deletes:
            if key not in known:
                raise die(fail + f"no such option '{key}'")
        cfg = self.ha.resources[sid]
        for key in deletes:
            cfg.pop(key, None)
        cfg.update(opts)
        self.ha.update_vm_state(sid)
        self.ha.wake()
        return None

    async def _ha_res_delete(self, v, user):
        sid, _kind, _name = self._ha_parse_sid(v["sid"])
        if sid not in self.ha.resources:
            raise die(f"cannot delete service '{sid}', not HA managed!")
        del self.ha.resources[sid]
        if str(v.get("purge", 1)).lower() not in ("0", "false"):
            self.ha.purge_rules(sid)
        self.ha.service_removed(sid)
        self.ha.wake()
        return None

    async def _ha_res_motion(self, v, cmd):
        sid, _kind, _name = self._ha_parse_sid(v["sid"])
        if sid not in self.ha.resources:
            raise die(f"resource '{sid}' is not HA managed")
        self._ha_check_state(sid, None)
        target = v["node"]
        if target not in self.nodes:
            raise die(f"no such cluster node '{target}'")
        # API2/HA/Resources.pm migrate/relocate: the command queued for the CRM (Config.pm
        # queue_crm_commands; the lab's CRM reads it at once), the answer from
        # get_resource_motion_info (PVE 9)
        if sid in self.ha.ss:
            self.ha.queue_motion(cmd, sid, target)
        else:
            self.ha.log(self._ha_local(), "pve-ha-crm", "err", f"crm command error - no such service: {cmd} {sid} {target}")
        self.ha.wake()
        if self.mode == "rules":
            together, blocking = self.ha.motion_info(sid, target)
            out: dict[str, Any] = {"sid": sid, "requested-node": target}
            if together:
                out["comigrated-resources"] = together
            if blocking:
                out["blocking-resources"] = [{"sid": b, "cause": "resource-affinity"} for b in blocking]
            return out
        return None

    async def _ha_node_maintenance(self, v, user):
        """`ha-manager crm-command node-maintenance enable|disable NODE` (CLI/ha_manager.pm
        node-maintenance-set: PVE::Cluster::check_node_exists, then Config.pm queue_crm_commands);
        the CRM acts on it in its next round (Manager.pm update_crm_commands)."""
        node = v["sid"]
        if node not in self.nodes:
            raise die(f"no such cluster node '{node}'")
        verb = "disable" if bool_int(v.get("disable", 0)) else "enable"
        self.ha.crm_commands.append(f"{verb}-node-maintenance {node}")
        self.ha.wake()
        return None

    async def _ha_res_migrate(self, v, user):
        return await self._ha_res_motion(v, "migrate")

    async def _ha_res_relocate(self, v, user):
        return await self._ha_res_motion(v, "relocate")

    # ------------------------------------------------------------------ groups (PVE 8)

    def _ha_group_copy(self, name: str) -> dict[str, Any]:
        if name not in self.ha.groups:
            raise die(f"no such ha group '{name}'")
        data = dict(self.ha.groups[name])
        data.update(group=name, type="group", digest=self.ha.digest("groups"))
        return data

    def _ha_group_options(self, v: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if v.get("nodes") is not None:
            nodes = parse_node_list(v["nodes"])
            out["nodes"] = encode_node_list(nodes)
        for key in ("nofailback", "restricted"):
            if v.get(key) is not None:
                out[key] = bool_int(v[key])
        if v.get("comment") is not None:
            out["comment"] = v["comment"]
        return out

    async def _ha_grp_list(self, v, user):
        self._ha_need_groups_api("index groups")
        return [self._ha_group_copy(g) for g in self.ha.groups]

    async def _ha_grp_read(self, v, user):
        self._ha_need_groups_api("read group")
        return self._ha_group_copy(v["group"])

    async def _ha_grp_create(self, v, user):
        self._ha_need_groups_api("create group")
        self.need_quorum()
        if v.get("type") and v["type"] != "group":
            raise die("types does not match")
        name = v["group"]
        if name in self.ha.groups:
            raise die(f"create ha group failed: ha group ID '{name}' already defined")
        self.ha.groups[name] = self._ha_group_options(v)
        self.ha.wake()
        return None

    async def _ha_grp_update(self, v, user):
        self._ha_need_groups_api("update group")
        fail = "update ha group failed: "
        if v.get("digest") and v["digest"] != self.ha.digest("groups"):
            raise die(fail + DIGEST_CHANGED)
        name = v["group"]
        if name not in self.ha.groups:
            raise die(fail + f"no such ha group '{name}'")
        cfg = self.ha.groups[name]
        cfg.update(self._ha_group_options(v))
        for key in split_list(v.get("delete")):
            if key not in ("nodes", "nofailback", "restricted", "comment"):
                raise die(fail + f"no such option '{key}'")
            if key == "nodes":
                raise die(fail + f"unable to delete required option '{key}'")
            cfg.pop(key, None)
        self.ha.wake()
        return None

    async def _ha_grp_delete(self, v, user):
        self._ha_need_groups_api("delete group")
        name = v["group"]
        for sid, res in self.ha.resources.items():
            if res.get("group") == name:
                raise die(f"delete ha group failed: ha group is used by service '{sid}'")
        self.ha.groups.pop(name, None)
        return None

    # ------------------------------------------------------------------ rules (PVE 9)

    def _ha_rule_copy(self, rid: str) -> dict[str, Any]:
        if rid not in self.ha.rules:
            raise die(f"no such ha rule '{rid}'")
        data = dict(self.ha.rules[rid])
        data.update(rule=rid, digest=self.ha.digest("rules"), order=self.ha.rule_order.get(rid, 0))
        if data.get("type") == "resource-affinity":
            data.setdefault("affinity", "positive")
        data["resources"] = ",".join(sorted(split_list(data.get("resources"))))
        if data.get("nodes"):
            data["nodes"] = encode_node_list(parse_node_list(data["nodes"]))
        errors = self._ha_rule_errors().get(rid)
        if errors:
            data["errors"] = {"resources": ", ".join(errors)}
        return data

    def _ha_rule_errors(self, rules: dict[str, Any] | None = None) -> dict[str, list[str]]:
        """API2/HA/Rules.pm $check_feasibility: the enabled rules checked over the cluster's nodes."""
        return affinity.feasibility_errors(affinity.enabled(self.ha.rules if rules is None else rules, self.ha.rule_order), self.node_names)

    def _ha_assert_feasible(self, rules: dict[str, Any], rid: str, fail: str) -> None:
        """API2/HA/Rules.pm $assert_feasibility: a PVE::Exception (400 "Rule 'x' is invalid." with the
        rule's errors) raised inside Config.pm lock_ha_domain, which dies with "$errmsg: $err": the
        exception stringified (pve-common Exception.pm stringify: code, message, then each error
        as "field: text"), answered as a 500."""
        errors = self._ha_rule_errors(rules).get(rid)
        if errors:
            raise die(f"{fail}400 Rule '{rid}' is invalid.\nresources: {', '.join(errors)}")

    def _ha_rule_options(self, v: dict[str, Any], kind: str, fail: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if v.get("resources") is not None:
            sids = []
            for item in split_list(v["resources"]):
                sid, _k, _n = self._ha_parse_sid(item)
                sids.append(sid)
            if not sids:
                raise die(fail + "no resources were specified")
            unmanaged = [s for s in sorted(set(sids)) if s not in self.ha.resources]
            if unmanaged:
                raise die(fail + "cannot use unmanaged resource(s) " + ", ".join(unmanaged) + ".")
            out["resources"] = ",".join(sorted(set(sids)))
        if v.get("nodes") is not None:
            if kind != "node-affinity":
                raise PveError(400, "Parameter verification failed.", {"nodes": NOT_IN_SCHEMA})
            nodes = parse_node_list(v["nodes"])
            if not nodes:
                raise die(fail + "no nodes were specified")
            missing = [n for n in sorted(nodes) if n not in self.nodes]
            if missing:
                raise die(fail + "cannot use non-existent node(s) " + ", ".join(missing) + ".")
            out["nodes"] = encode_node_list(nodes)
        if v.get("strict") is not None:
            if kind != "node-affinity":
                raise PveError(400, "Parameter verification failed.", {"strict": NOT_IN_SCHEMA})
            out["strict"] = bool_int(v["strict"])
        if v.get("affinity") is not None:
            if kind != "resource-affinity":
                raise PveError(400, "Parameter verification failed.", {"affinity": NOT_IN_SCHEMA})
            out["affinity"] = v["affinity"]
        if v.get("comment") is not None:
            out["comment"] = v["comment"]
        if v.get("disable") is not None and bool_int(v["disable"]):
            out["disable"] = 1
        return out

    async def _ha_rule_list(self, v, user):
        self._ha_need_rules_api("GET", "/cluster/ha/rules")
        out = []
        for rid in sorted(self.ha.rules, key=lambda r: (self.ha.rule_order.get(r, 0), r)):
            data = self._ha_rule_copy(rid)
            if v.get("type") and data.get("type") != v["type"]:
                continue
            if v.get("resource") and v["resource"] not in split_list(data.get("resources")):
                continue
            out.append(data)
        return out

    async def _ha_rule_read(self, v, user):
        self._ha_need_rules_api("GET", f"/cluster/ha/rules/{v['rule']}")
        return self._ha_rule_copy(v["rule"])

    async def _ha_rule_create(self, v, user):
        self._ha_need_rules_api("POST", "/cluster/ha/rules")
        self.need_quorum()
        fail = "create ha rule failed: "
        kind, rid = v.get("type"), v["rule"]
        if kind not in ("node-affinity", "resource-affinity"):
            raise PveError(400, "Parameter verification failed.", {"type": "value not allowed"})
        if v.get("resources") is None:
            raise PveError(400, "Parameter verification failed.", {"resources": "property is missing and it is not optional"})
        if kind == "node-affinity" and v.get("nodes") is None:
            raise PveError(400, "Parameter verification failed.", {"nodes": "property is missing and it is not optional"})
        if rid in self.ha.rules:
            raise die(fail + f"HA rule '{rid}' already defined")
        opts = self._ha_rule_options(v, kind, fail)
        if kind == "resource-affinity" and opts.get("affinity") is None:
            raise PveError(400, "Parameter verification failed.", {"affinity": "property is missing and it is not optional"})
        order = dict(self.ha.rule_order, **{rid: max(self.ha.rule_order.values(), default=0) + 1})
        self._ha_assert_feasible(dict(self.ha.rules, **{rid: dict(opts, type=kind)}), rid, fail)
        self.ha.rules[rid] = dict(opts, type=kind)
        self.ha.rule_order[rid] = order[rid]
        self.ha.wake()
        return None

    async def _ha_rule_update(self, v, user):
        self._ha_need_rules_api("PUT", f"/cluster/ha/rules/{v['rule']}")
        fail = "update HA rules failed: "
        if v.get("digest") and v["digest"] != self.ha.digest("rules"):
            raise die(fail + DIGEST_CHANGED)
        rid = v["rule"]
        if rid not in self.ha.rules:
            raise die(fail + f"HA rule '{rid}' does not exist")
        rule = self.ha.rules[rid]
        if v.get("type") and v["type"] != rule["type"]:
            raise die(fail + "types does not match")
        opts = self._ha_rule_options(v, rule["type"], fail)
        for key in split_list(v.get("delete")):
            if key in ("resources", "nodes") and not (key == "nodes" and rule["type"] != "node-affinity"):
                raise die(fail + f"unable to delete required option '{key}'")
        new = dict(rule)
        for key in split_list(v.get("delete")):
            new.pop(key, None)
        if v.get("disable") is not None and not bool_int(v["disable"]):
            new.pop("disable", None)
        new.update(opts)
        self._ha_assert_feasible(dict(self.ha.rules, **{rid: new}), rid, fail)
        rule.clear()
        rule.update(new)
        self.ha.wake()
        return None

    async def _ha_rule_delete(self, v, user):
        self._ha_need_rules_api("DELETE", f"/cluster/ha/rules/{v['rule']}")
        self.ha.rules.pop(v["rule"], None)
        self.ha.rule_order.pop(v["rule"], None)
        self.ha.wake()
        return None

    # ------------------------------------------------------------------ status

    async def _ha_status_current(self, v, user):
        return self.ha.status_current(self._ha_local())

    async def _ha_manager_status(self, v, user):
        return self.ha.manager_status(self._ha_local())
