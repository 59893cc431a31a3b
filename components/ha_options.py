"""The HA manager's cluster-wide settings an operator sets (datacenter.cfg, ``GET``/``PUT /cluster/options``):

- ``ha.shutdownPolicy`` -> ``ha: shutdown_policy=<freeze|failover|migrate|conditional>``: what a
  graceful shutdown or reboot of a node does with its HA VMs (pve-ha-manager LRM.pm shutdown_request);
- ``ha.crs`` -> ``crs: ha=<basic|static>``: how the HA manager picks a node (Usage/Basic.pm counts
  services; Usage/Static.pm weighs the VMs' configured memory and CPUs against the nodes');
- ``ha.rebalanceOnStart`` -> ``crs: ha-rebalance-on-start=<0|1>``: a service asked to start may
  first move to the best node (Manager.pm next_state_request_start).

A dynamic resource over the PVE API: create and update set the keys the config names (the other
parts of those property strings, and every other datacenter option, are kept); refresh reads them
back, so a policy changed by hand shows in ``pulumi preview`` and ``pulumi up`` sets it again.
Removing a key from the config, or the stack's destroy, removes what the stack set: PVE's default
(``conditional``, ``basic``, off) holds again.

A cluster has one datacenter.cfg, and stacks share clusters. As with the scrub window
(components/ceph_scrub.py), the first stack that sets these owns them: its owner tag is kept in
Ceph's config-key store (:data:`OWNER_KEY`). Another stack that names the same values checks them
read-only; one that names other values is refused in its preview, before any change, naming the
owner. Writing datacenter.cfg needs Sys.Modify on ``/`` (API2/Cluster.pm set_options), which the
program's role does not hold: a stack that sets these gets a second role on ``/`` (components/pve_rights.py
OPTIONS_ROLE).

bpg's ``proxmoxve.ClusterOptions`` (v0.111.1, clusteroptions resource) is not used: its delete
clears every option it read, not only the ones a stack set, and it has no owner.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, cast

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from clients import ceph_cli
from clients.pve.api import ApiProps, PveApi, api_errors, connect, reason
from clients.ssh import Executor, RemoteError, check, render
from components.dynamic import SshBacked, checks_due, connection_changed
from components.errors import OperatorError, failed
from components.graph import child_options

if TYPE_CHECKING:
    from components.config import HaSpec

ID = "ha-options"
OWNER_KEY = "pve-ceph-ha/ha-options/owner"
# property -> (datacenter.cfg key, its sub-key, the config key, PVE's default)
FIELDS: dict[str, tuple[str, str, str, Any]] = {
    "shutdownPolicy": ("ha", "shutdown_policy", "ha.shutdownPolicy", "conditional"),
    "crs": ("crs", "ha", "ha.crs", "basic"),
    "rebalanceOnStart": ("crs", "ha-rebalance-on-start", "ha.rebalanceOnStart", False),
}


class HaOptionsInputs(TypedDict):
    """The HaOptions resource's inputs. The keys are the state's: renaming one changes every deployed
    stack. A field left out of the config is None: not the stack's to set. (``setBy`` is an output.)"""

    api: ApiProps
    connection: Any  # the Ceph admin node's SSH connection: the owner record
    owner: str
    shutdownPolicy: str | None
    crs: str | None
    rebalanceOnStart: bool | None


def ha_options_inputs(props: Mapping[str, Any]) -> HaOptionsInputs:
    return cast(HaOptionsInputs, props)


def wanted(props: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the config sets."""
    return {field: props.get(field) for field in FIELDS if props.get(field) is not None}


def from_config(ha: HaSpec) -> dict[str, Any]:
    """FIELDS as the config gives them (None: not the stack's to set)."""
    return {"shutdownPolicy": ha.shutdown_policy, "crs": ha.crs, "rebalanceOnStart": ha.rebalance_on_start}


def parsed(value: Any) -> dict[str, Any]:
    """A datacenter.cfg property string as GET /cluster/options answers it (an object), or as text."""
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in str(value or "").split(","):
        key, sep, text = item.partition("=")
        if sep:
            out[key.strip()] = text.strip()
    return out


def _flag(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def effective(options: Mapping[str, Any]) -> dict[str, Any]:
    """The three settings as the HA manager uses them: the value set, or PVE's default."""
    out = {}
    for field, (key, sub, _, default) in FIELDS.items():
        value = parsed(options.get(key)).get(sub)
        out[field] = default if value is None else (_flag(value) if isinstance(default, bool) else str(value))
    return out


def _text(values: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in values.items())


def put_arguments(options: Mapping[str, Any], set_: Mapping[str, Any], clear: tuple[str, ...] = ()) -> dict[str, str]:
    """The PUT /cluster/options arguments that set SET's fields and remove CLEAR's, keeping every
    other part of the ``ha`` and ``crs`` property strings."""
    changed: dict[str, dict[str, Any]] = {}
    for field, value in set_.items():
        key, sub = FIELDS[field][:2]
        changed.setdefault(key, parsed(options.get(key)))[sub] = value
    for field in clear:
        key, sub = FIELDS[field][:2]
        changed.setdefault(key, parsed(options.get(key))).pop(sub, None)
    arguments = {key: _text(values) for key, values in changed.items() if values}
    if gone := [key for key, values in changed.items() if not values and options.get(key) not in (None, "", {})]:
        arguments["delete"] = ",".join(gone)
    return arguments


def describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{FIELDS[f][2]} {'true' if v is True else 'false' if v is False else v}" for f, v in values.items())


ApiFactory = Callable[[ApiProps], PveApi]


class HaOptionsProvider(SshBacked, ResourceProvider):
    def __init__(self, executor_factory: Any = None, api_factory: ApiFactory | None = None) -> None:
        super().__init__(executor_factory)
        self._api_factory = api_factory

    def api(self, props: HaOptionsInputs) -> PveApi:
        return (self._api_factory or connect)(props["api"])

    @staticmethod
    def options(api: PveApi) -> dict[str, Any]:
        try:
            answer = api.cluster.options.get()
        except api_errors() as exc:
            raise failed("GET /cluster/options", reason(exc)) from None
        if not isinstance(answer, dict):
            raise OperatorError(f"GET /cluster/options: unexpected answer from the PVE API: {str(answer)[:200]!r}")
        return answer

    @staticmethod
    def put(api: PveApi, arguments: dict[str, str]) -> None:
        if not arguments:
            return
        try:
            api.cluster.options.put(**arguments)
        except api_errors() as exc:
            raise failed(f"PUT /cluster/options {' '.join(f'{k}={v}' for k, v in arguments.items())}", reason(exc)) from None

    @staticmethod
    def holder(executor: Executor) -> str:
        """The owner tag of the stack that owns the settings, "" when none does (one question a run: the run memo)."""
        result = ceph_cli.mon_reads(executor, [ceph_cli.config_key_get(OWNER_KEY)])[0]
        if result.exit_status == 2 and "ENOENT" in result.stderr:
            return ""
        return check(result, render(ceph_cli.config_key_get(OWNER_KEY))).stdout.strip()

    @staticmethod
    def refuse(holder: str, seen: Mapping[str, Any], asked: Mapping[str, Any]) -> str:
        theirs = {f: seen.get(f) for f in asked}
        return (
            f"ha: the cluster has one HA shutdown policy and scheduler (datacenter.cfg), and stack {holder.removeprefix('pulumi-stack.')} "
            f"owns them ({describe(theirs)}); this stack asks for {describe(asked)}. Set these keys to that stack's values "
            "(this stack then checks them read-only), or leave them out of this stack's config; if that stack no longer exists "
            f"(removed without `pulumi destroy`), release them with `ceph config-key rm {OWNER_KEY}`"
        )

    def look(self, props: HaOptionsInputs, api: PveApi) -> tuple[dict[str, Any], dict[str, Any], str]:
        """The cluster's options, their effective values, and the owner."""
        options = self.options(api)
        try:
            return options, effective(options), self.holder(self.executor(props))
        except RemoteError as exc:
            raise failed("ha options: the owner record", exc) from None

    def record(self, props: HaOptionsInputs, argv: list[str]) -> None:
        """Set or remove the owner record (`ceph config-key set|rm`)."""
        try:
            check(self.executor(props).run(argv), render(argv))
        except RemoteError as exc:
            raise failed("ha options: the owner record", exc) from None

    def check(self, old: dict[str, Any], new: dict[str, Any]) -> CheckResult:
        # every preview and up, before any change: another stack's settings are never overwritten
        props = ha_options_inputs(new)
        asked = wanted(props)
        if checks_due(new) and asked:
            _, seen, holder = self.look(props, self.api(props))
            if holder and holder != props["owner"] and any(seen[f] != v for f, v in asked.items()):
                return CheckResult(inputs=new, failures=[CheckFailure(next(iter(asked)), self.refuse(holder, seen, asked))])
        return CheckResult(inputs=new, failures=[])

    def converge(self, props: HaOptionsInputs, clear: tuple[str, ...] = ()) -> dict[str, Any]:
        """Set what PROPS asks and remove CLEAR's fields (the stack's, no longer asked): the outputs.
        (The resource exists only while the config names at least one field: PROPS asks for something.)"""
        api = self.api(props)
        options, seen, holder = self.look(props, api)
        asked, owner = wanted(props), props["owner"]
        if holder and holder != owner:
            if any(seen[f] != v for f, v in asked.items()):
                raise OperatorError(self.refuse(holder, seen, asked))
            return {**props, "seen": seen, "setBy": holder}  # another stack's: read-only
        unset = {f for f in FIELDS if parsed(options.get(FIELDS[f][0])).get(FIELDS[f][1]) is None}
        self.put(api, put_arguments(options, {f: v for f, v in asked.items() if seen[f] != v or f in unset}, clear))
        if holder != owner:
            self.record(props, ceph_cli.config_key_set(OWNER_KEY, owner))
        return {**props, "seen": effective(self.options(api)), "setBy": owner}

    def create(self, raw: dict[str, Any]) -> CreateResult:
        try:
            return CreateResult(id_=ID, outs=self.converge(ha_options_inputs(raw)))
        except OperatorError as exc:
            raise OperatorError(f"ha options: {exc}") from None

    def read(self, id_: str, raw: dict[str, Any]) -> ReadResult:
        props = ha_options_inputs(raw)
        _, seen, holder = self.look(props, self.api(props))
        return ReadResult(id_=id_, outs={**props, "seen": seen, "setBy": holder})

    def diff(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> DiffResult:
        news = ha_options_inputs(new)
        asked, seen = wanted(news), old.get("seen") or {}
        holder, owner = str(old.get("setBy") or ""), news["owner"]
        changes = [f for f, v in asked.items() if seen.get(f) != v]  # the config changed, or the cluster (by hand)
        if holder and holder != owner:
            if changes:
                print(f"warning: {self.refuse(holder, seen, asked)}", file=sys.stderr, flush=True)
            changes = []  # another stack's settings: this stack only reads them
        else:
            changes += [f for f in FIELDS if news.get(f) is None and old.get(f) is not None]  # given back to PVE's default
            if holder != owner:
                changes.append("owner")
        if connection_changed(old, news):
            changes.append("connection")
        return DiffResult(changes=bool(changes), replaces=[], stables=[])

    def update(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> UpdateResult:
        news = ha_options_inputs(new)
        clear = tuple(f for f in FIELDS if news.get(f) is None and old.get(f) is not None and old.get("setBy") == news["owner"])
        try:
            return UpdateResult(outs=self.converge(news, clear))
        except OperatorError as exc:
            raise OperatorError(f"ha options: {exc}") from None

    def delete(self, id_: str, raw: dict[str, Any]) -> None:
        props = ha_options_inputs(raw)
        api = self.api(props)
        options, _, holder = self.look(props, api)
        if holder != props["owner"]:
            return  # another stack's settings (or no one's: set by hand since): left as they are
        self.put(api, put_arguments(options, {}, tuple(f for f in FIELDS if props.get(f) is not None)))
        self.record(props, ceph_cli.config_key_rm(OWNER_KEY))


class HaOptionsResource(Resource, module="pveceph", name="HaOptions"):
    def __init__(self, name: str, props: HaOptionsInputs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["api", "connection"])
        super().__init__(HaOptionsProvider(), name, {**props, "seen": None, "setBy": None}, pulumi.ResourceOptions.merge(opts, secret))


class HaOptions(pulumi.ComponentResource):
    """The HA shutdown policy and scheduler (datacenter.cfg ``ha`` and ``crs``), read back on refresh."""

    def __init__(self, name: str, ha: HaSpec, api: Any, connection: pulumi.Input[dict[str, Any]], owner: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("pveceph:ha:Options", name, None, opts)
        props = ha_options_inputs({"api": api, "connection": connection, "owner": owner, **from_config(ha)})
        self.options = HaOptionsResource(f"{name}-options", props, child_options(self, opts))
        self.register_outputs({})
