"""/cluster/options: datacenter.cfg, the options the lab's HA manager reads (`ha`: the shutdown
policy; `crs`: the resource scheduler), after pve-manager PVE/API2/Cluster.pm get_options and
set_options and pve-cluster src/PVE/DataCenterConfig.pm (the `ha` and `crs` property strings,
parsed into objects on read: parse_datacenter_config).

GET needs Sys.Audit on / (without it only `console` and `tag-style`), PUT Sys.Modify on /. A PUT
sets the keys given and removes those in `delete`. Other datacenter options are kept as given."""

from __future__ import annotations

from typing import Any

from fakepve.model import PveError

SHUTDOWN_POLICIES = ("freeze", "failover", "conditional", "migrate")  # pve-ha-shutdown-policy
CRS_HA = ("basic", "static", "dynamic")


def _property_string(text: str) -> dict[str, str]:
    out = {}
    for item in str(text).split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"missing key in comma-separated list property: '{item}'")
        out[key.strip()] = value.strip()
    return out


def parse_ha(text: str) -> dict[str, str]:
    """DataCenterConfig.pm $ha_format: shutdown_policy=<freeze|failover|conditional|migrate>."""
    values = _property_string(text)
    for key, value in values.items():
        if key != "shutdown_policy":
            raise ValueError(f"invalid format - property '{key}' is not defined in schema")
        if value not in SHUTDOWN_POLICIES:
            raise ValueError(f"invalid format - shutdown_policy: value '{value}' does not have a value in the enumeration '{', '.join(SHUTDOWN_POLICIES)}'")
    return values


def parse_crs(text: str) -> dict[str, Any]:
    """DataCenterConfig.pm $crs_format: ha=<basic|static|dynamic>, ha-rebalance-on-start=<bool>."""
    values: dict[str, Any] = _property_string(text)
    for key, value in list(values.items()):
        if key == "ha":
            if value not in CRS_HA:
                raise ValueError(f"invalid format - ha: value '{value}' does not have a value in the enumeration '{', '.join(CRS_HA)}'")
        elif key == "ha-rebalance-on-start":
            if value not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"invalid format - ha-rebalance-on-start: type check ('boolean') failed - got '{value}'")
            values[key] = 1 if value in ("1", "true", "yes", "on") else 0
        else:
            raise ValueError(f"invalid format - property '{key}' is not defined in schema")
    return values


class ClusterOptionsApi:
    """Mixin of LabPve: GET/PUT /cluster/options over `self.datacenter` (datacenter.cfg's lines)."""

    def _routes_options(self):
        return [("GET", "/cluster/options", self._options_get), ("PUT", "/cluster/options", self._options_set)]

    def shutdown_policy(self) -> str:
        """datacenter.cfg `ha: shutdown_policy=...`, PVE's default `conditional` when unset."""
        return parse_ha(self.datacenter["ha"]).get("shutdown_policy", "conditional") if self.datacenter.get("ha") else "conditional"

    async def _options_get(self, v, user):
        parsed: dict[str, Any] = {}
        for key, value in self.datacenter.items():
            parsed[key] = parse_ha(value) if key == "ha" else parse_crs(value) if key == "crs" else value
        if not self.allowed(user, "/", "Sys.Audit"):
            parsed = {k: parsed[k] for k in ("console", "tag-style") if k in parsed}
        return {**parsed, "allowed-tags": []}

    async def _options_set(self, v, user):
        self.require(user, "/", "Sys.Modify")
        errors = {}
        for key, parse in (("ha", parse_ha), ("crs", parse_crs)):
            if v.get(key) is not None:
                try:
                    parse(v[key])
                except ValueError as exc:
                    errors[key] = str(exc)
        if errors:
            raise PveError(400, "Parameter verification failed.", errors)
        for key, value in v.items():
            if key not in ("delete", "digest") and value is not None:
                self.datacenter[key] = str(value)
        for key in str(v.get("delete") or "").replace(";", ",").split(","):
            self.datacenter.pop(key.strip(), None)
        self.ha.wake()
        return None
