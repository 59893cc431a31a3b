"""Runbook 8: scrubs outside business hours (``osd_scrub_begin_hour`` / ``osd_scrub_end_hour``).

A dynamic resource on the Ceph admin node: create and update run ``ceph config set osd ...``,
refresh reads the window back with ``ceph config get osd ...``, so a window changed by hand shows
in ``pulumi preview`` and ``pulumi up`` sets it again. Removing ``ceph.scrubWindow`` from the config
deletes the resource: ``ceph config rm`` restores Ceph's default (scrubs at any hour).

A cluster has one scrub window, and several stacks may share the cluster. The first stack that
sets it owns it: its owner tag is kept in the monitors' key/value store (``ceph config-key``,
:data:`OWNER_KEY`). Another stack that asks for the same window checks it read-only (it records
whose it is, and never sets or removes it); one that asks for another window is refused, naming
the owner. Only the owner's destroy (or removing its ``ceph.scrubWindow``) resets the window. A
window set before the key existed has no owner: the stack whose state holds it claims it on its
next ``up``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict, cast

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from clients import ceph_cli
from clients.ssh import Executor, RemoteError, Result, check, render
from components.dynamic import SshBacked, connection_changed, whole_numbers
from components.errors import OperatorError, PartiallyCreated, failed
from components.graph import child_options

if TYPE_CHECKING:  # the config model (pydantic) is the program's; the provider process never loads it
    from components.config import ScrubWindow

WHO = "osd"
ID = "osd-scrub-window"
KEYS = {"beginHour": "osd_scrub_begin_hour", "endHour": "osd_scrub_end_hour"}  # property -> Ceph option
OWNER_KEY = "pve-ceph-ha/scrub-window/owner"


class ScrubWindowInputs(TypedDict):
    """The ScrubWindow resource's inputs: CephScrubWindow writes them, ScrubWindowProvider reads them, the tests build them.
    The keys are the state's: renaming one changes every deployed stack. (``setBy`` is an output: the owner's tag.)"""

    connection: Any  # the Ceph admin node's SSH connection (clients/ssh.py Connection.props), a secret
    beginHour: int
    endHour: int
    owner: str  # this stack's owner tag; "" (or absent, in states before issue #21): none


def scrub_window_inputs(props: Mapping[str, Any]) -> ScrubWindowInputs:
    """The typed view of a call's inputs, the state's keys in a plain dict; Pulumi hands a dynamic
    provider every number as a float: ``22.0`` must reach Ceph as ``22``."""
    return cast(ScrubWindowInputs, whole_numbers(props, KEYS))


def _hours(props: ScrubWindowInputs) -> dict[str, int]:
    """The window's hours, as :meth:`ScrubWindowProvider.observe` reads them from Ceph."""
    return {"beginHour": props["beginHour"], "endHour": props["endHour"]}


class ScrubWindowProvider(SshBacked, ResourceProvider):
    @staticmethod
    def ask(executor: Executor) -> dict[str, Result]:
        """The window's hours and its owner tag, as Ceph answers them: one question to the monitors
        a run (observe and holder both ask it; the run memo answers the second)."""
        reads = {key: ceph_cli.config_get(WHO, key) for key in KEYS.values()} | {OWNER_KEY: ceph_cli.config_key_get(OWNER_KEY)}
        return dict(zip(reads, ceph_cli.mon_reads(executor, list(reads.values())), strict=True))

    def observe(self, executor: Executor) -> dict[str, int]:
        """The hours the OSDs use now: the value set, or Ceph's default when none is."""
        seen = {}
        answers = self.ask(executor)
        for prop, key in KEYS.items():
            result = check(answers[key], f"ceph config get {WHO} {key}")
            try:
                seen[prop] = int(result.stdout.strip())
            except ValueError:
                raise OperatorError(f"ceph config get {WHO} {key}: expected an hour, got {result.stdout.strip()[:100]!r}") from None
        return seen

    def holder(self, executor: Executor) -> str:
        """The owner tag of the stack that owns the window, "" when none does."""
        result = self.ask(executor)[OWNER_KEY]
        if result.exit_status == 2 and "ENOENT" in result.stderr:
            return ""
        return check(result, render(ceph_cli.config_key_get(OWNER_KEY))).stdout.strip()

    def apply(self, executor: Executor, wanted: dict[str, int], seen: dict[str, int] | None, owner: str = "") -> None:
        for prop, key in KEYS.items():
            if seen is None or seen[prop] != wanted[prop]:
                check(executor.run(ceph_cli.config_set(WHO, key, wanted[prop])), f"ceph config set {WHO} {key} {wanted[prop]}")
        if owner:
            check(executor.run(ceph_cli.config_key_set(OWNER_KEY, owner)), render(ceph_cli.config_key_set(OWNER_KEY, owner)))

    @staticmethod
    def refuse(holder: str, seen: dict[str, int], wanted: dict[str, int]) -> OperatorError:
        return OperatorError(
            f"ceph.scrubWindow: the cluster has one scrub window, and stack {holder.removeprefix('pulumi-stack.')} owns it "
            f"({seen['beginHour']}-{seen['endHour']}); this stack asks for {wanted['beginHour']}-{wanted['endHour']}. "
            "Set ceph.scrubWindow to that stack's window (this stack then checks it read-only), or leave it out of this stack's config; "
            f"if that stack no longer exists (removed without `pulumi destroy`), release the window with `ceph config-key rm {OWNER_KEY}`"
        )

    def create(self, raw: dict[str, Any]) -> CreateResult:
        props = scrub_window_inputs(raw)
        executor = self.executor(props)
        wanted = _hours(props)
        owner = str(props.get("owner") or "")
        asked = False  # once a `ceph config set` has been sent, the window may be (half) set
        try:
            seen = self.observe(executor)
            holder = self.holder(executor)
            if holder and holder != owner:
                if seen != wanted:
                    raise self.refuse(holder, seen, wanted)
                return CreateResult(id_=ID, outs={**props, **seen, "setBy": holder})  # another stack's: read-only
            asked = True
            self.apply(executor, wanted, seen, owner)
            return CreateResult(id_=ID, outs={**props, **self.observe(executor), "setBy": owner})
        except (RemoteError, OperatorError) as exc:
            message = f"scrub window: {exc}"
            if asked:  # the state records it; the next `pulumi up` reads it back and sets what is missing
                raise PartiallyCreated(message, "scrub window", ID, props) from None
            raise OperatorError(message) from None

    def read(self, id_: str, raw: dict[str, Any]) -> ReadResult:
        props = scrub_window_inputs(raw)
        try:
            executor = self.executor(props)
            seen, holder = self.observe(executor), self.holder(executor)  # one question to the monitors
        except RemoteError as exc:
            raise failed("scrub window", exc) from None
        return ReadResult(id_=id_, outs={**props, **seen, "setBy": holder})

    def diff(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> DiffResult:
        olds, news = scrub_window_inputs(old), scrub_window_inputs(new)
        old_hours, new_hours = _hours(olds), _hours(news)
        holder, owner = str(old.get("setBy") or ""), str(news.get("owner") or "")
        if holder and holder != owner:
            changes: list[str] = []  # another stack's window: this stack only reads it
            if old_hours != new_hours:
                print(f"warning: {self.refuse(holder, old_hours, new_hours)}", file=sys.stderr, flush=True)
        else:
            changes = [prop for prop in KEYS if old_hours[prop] != new_hours[prop]]
            if owner and holder != owner:
                changes.append("owner")  # a window set before the owner key: the stack that holds it claims it
        if connection_changed(olds, news):
            changes.append("connection")
        return DiffResult(changes=bool(changes), replaces=[], stables=[])

    def update(self, id_: str, old: dict[str, Any], new: dict[str, Any]) -> UpdateResult:
        news = scrub_window_inputs(new)
        executor = self.executor(news)
        wanted = _hours(news)
        owner = str(news.get("owner") or "")
        try:
            seen, holder = self.observe(executor), self.holder(executor)
            if holder and holder != owner:
                if seen != wanted:
                    raise self.refuse(holder, seen, wanted)
                return UpdateResult(outs={**news, **seen, "setBy": holder})
            self.apply(executor, wanted, seen, owner)
            return UpdateResult(outs={**news, **self.observe(executor), "setBy": owner})
        except RemoteError as exc:
            raise failed("scrub window", exc) from None

    def delete(self, id_: str, raw: dict[str, Any]) -> None:
        props = scrub_window_inputs(raw)
        executor = self.executor(props)
        owner = str(props.get("owner") or "")
        try:
            holder = self.holder(executor)
            if holder and holder != owner:
                return  # another stack's window: left as it is
            for key in KEYS.values():
                check(executor.run(ceph_cli.config_rm(WHO, key)), f"ceph config rm {WHO} {key}")
            if holder:
                check(executor.run(ceph_cli.config_key_rm(OWNER_KEY)), render(ceph_cli.config_key_rm(OWNER_KEY)))
        except RemoteError as exc:
            raise failed("scrub window", exc) from None


class ScrubWindowResource(Resource, module="pveceph", name="ScrubWindow"):
    def __init__(self, name: str, props: ScrubWindowInputs, opts: pulumi.ResourceOptions | None = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection"])
        super().__init__(ScrubWindowProvider(), name, {**props, "setBy": None}, pulumi.ResourceOptions.merge(opts, secret))


class CephScrubWindow(pulumi.ComponentResource):
    """Runbook 8: ``ceph config set osd osd_scrub_begin_hour 22`` and ``osd_scrub_end_hour 6``, read back on refresh."""

    def __init__(self, name: str, window: ScrubWindow, connection: pulumi.Input[dict[str, Any]], owner: str = "", opts: pulumi.ResourceOptions | None = None):
        super().__init__("pveceph:ceph:ScrubWindow", name, None, opts)
        props = ScrubWindowInputs(connection=connection, beginHour=window.begin_hour, endHour=window.end_hour, owner=owner)
        self.window = ScrubWindowResource(f"{name}-window", props, child_options(self, opts))
        self.register_outputs({})
