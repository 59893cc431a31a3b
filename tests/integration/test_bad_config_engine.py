"""Bad input through the real engine (issue #8): the unit tests' invalid-config corpus as
``pulumi preview`` of the real program (__main__.py) on the lab stack's config.

Every case must be refused by the program with the key (``pve-ceph-ha:<key>``) and the rule, with
no Python traceback anywhere in the output, before any resource operation: the engine's event
stream (``on_event``) shows no step for any resource but the root ``pulumi:pulumi:Stack``, and
the program registered nothing else. Nothing with the stack's names appears in the lab.

Two stacks serve every case, two previews at once (issue #22: a refused preview is mostly one
core's work, the CLI's key derivation and the program's start; the module ran one at a time in
105 s): each case, on whichever stack is free, writes a fresh copy of the lab config
(lab/stack.yaml) with the one key broken, and sets or removes the ``proxmoxApiToken`` secret where
the case is about it. The previews start with the module, in the tests' order; each test waits for
its own and checks it. A few cases only the engine can make are added: a whole key that is not a
mapping, a key the model does not know, and the token stored in plain text.

Then every key of a VM (``VmSpec``) gets the whole payload corpus of tests/unit/test_shell_payloads.py
(shell and PVE API payloads) in one preview per key: one VM per payload, valid but for that key,
and every ``pve-ceph-ha:vms[i].<key>`` must be named in the one refusal (the program reports every
problem at once), with nothing else refused.
"""

from __future__ import annotations

import copy
import functools
import queue
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation as auto

from components import config as cfg
from lab.testing.stack import PREFIX, LabStack, base_config, client_caps, forget, names, pool_exists, storages
from tests.corpus import API_PAYLOADS, DELETE, INVALID, PAYLOADS, set_path
from tests.unit.helpers import TOKEN, valid_raw

# needs the running lab and the Pulumi engine (the project's CLI and plugins) (tools/run-tests.sh selects by these marks)
pytestmark = [pytest.mark.lab, pytest.mark.engine]

STACK = "badeng"  # its pool, client and storage: badeng-pool, client.badeng, badeng-rbd
STACKS = (STACK, f"{STACK}-2")  # the two stacks, both with badeng's names (nothing is ever made)
ROOT_TYPE = "pulumi:pulumi:Stack"
TOKEN_KEY = "proxmoxApiToken"
PLAINTEXT = object()  # the engine-only case: a well-formed token set without --secret
# id, name, node, ..., memoryMb, ..., affinity; not the VM's notes, free text (tests/unit/test_shell_payloads.py FREE_TEXT)
VM_KEYS = [field.alias or name for name, field in cfg.VmSpec.model_fields.items() if name != "description"]
VM_PAYLOADS = PAYLOADS + API_PAYLOADS


@dataclass(frozen=True)
class Case:
    path: str  # the key path broken (the unit corpus's notation: a.b[0].c)
    value: Any  # the bad value; DELETE removes the key; PLAINTEXT: the token in plain text
    key: str  # the key the message must name
    rule: str  # a word of the rule the message must give

    @property
    def id(self) -> str:
        shown = "DELETE" if self.value is DELETE else "PLAINTEXT" if self.value is PLAINTEXT else repr(self.value)
        return f"{self.path}={shown}"[:60]


CASES = [Case(*entry) for entry in INVALID] + [
    # `pve-ceph-ha:ceph: 127.10.10.101`: a whole section given as a string
    Case("ceph", "127.10.10.101", "ceph", "must be an object"),
    # a top-level typo the engine passes on like any other project key
    Case("vm", [{"id": 101, "name": "vm101", "node": "pve-node1"}], "vm", "not a known key"),
    # load_from_pulumi refuses a secret key stored in plain text, even with a valid value
    Case(TOKEN_KEY, PLAINTEXT, TOKEN_KEY, "plain text"),
]


@dataclass
class Tally:
    """What one kind of test tried, what passed, and the time it took."""

    tried: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    preview_seconds: list[float] = field(default_factory=list)

    def summary(self, what: str) -> str:
        mean = sum(self.preview_seconds) / max(len(self.preview_seconds), 1)
        return f"{what}: {len(self.tried)} tried, {len(self.passed)} passed, {self.seconds:.1f} s (preview mean {mean:.2f} s, {len(STACKS)} at once)"


@dataclass
class Worker:
    """One of the module's stacks, and its stack file as LabStack wrote it (the salt, the secret token)."""

    stack: LabStack
    pristine: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.pristine = yaml.safe_load(self.stack_file.read_text())
        assert "secure" in self.pristine["config"][PREFIX + TOKEN_KEY], "LabStack should have set the token as a secret"

    @property
    def stack_file(self) -> Path:
        return self.stack.work / f"Pulumi.{self.stack.name}.yaml"


@dataclass
class Run:
    started: float
    setup_seconds: float = 0.0
    cases: Tally = field(default_factory=Tally)
    payloads: Tally = field(default_factory=Tally)
    previews: dict[str, Future[Refusal]] = field(default_factory=dict)  # test node id -> its refused preview

    def refusal(self, request: pytest.FixtureRequest) -> Refusal:
        """The requesting test's preview, once it is done (its assertion, if one failed)."""
        return self.previews.pop(request.node.nodeid).result()


@pytest.fixture(scope="module")
def run(request: pytest.FixtureRequest, lab_state: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    t0 = time.monotonic()
    forget(STACK)
    workers = [Worker(LabStack(name, lab_state, tmp_path_factory.mktemp(name), names(STACK))) for name in STACKS]
    state = Run(started=t0, setup_seconds=time.monotonic() - t0)
    free: queue.Queue[Worker] = queue.Queue()
    for worker in workers:
        free.put(worker)

    def on_a_free_stack(preview: Callable[[Worker], Refusal]) -> Refusal:
        worker = free.get()
        try:
            return preview(worker)
        finally:
            free.put(worker)

    pool = ThreadPoolExecutor(len(workers), thread_name_prefix=STACK)
    try:
        for item in request.session.items:  # the selected tests of this module, in their order
            callspec = getattr(item, "callspec", None)
            if callspec is None or getattr(item, "module", None) is not request.module:
                continue
            params = callspec.params
            if "case" in params:
                job = functools.partial(case_preview, case=params["case"], tally=state.cases)
            else:
                job = functools.partial(payload_preview, key=params["key"], tally=state.payloads)
            state.previews[item.nodeid] = pool.submit(on_a_free_stack, job)
        yield state
    finally:
        pool.shutdown(cancel_futures=True)
        for worker in workers:
            worker.stack.remove()


def _parts(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in path.replace("]", "").split("."):
        name, *indexes = piece.split("[")
        parts.append(name)
        parts.extend(int(i) for i in indexes)
    return parts


def seed_missing(config: dict[str, Any], path: str) -> None:
    """Copy from the unit tests' valid config the parents of ``path`` the lab config lacks
    (its HA affinity: lab/stack.yaml defines none), so that only the case's key is wrong."""
    target: Any = config
    source: Any = valid_raw()
    for part in _parts(path)[:-1]:
        try:
            below = source[part]
        except (KeyError, IndexError, TypeError):
            return  # not in the valid config either: the case itself adds it
        if isinstance(target, dict) and part not in target:
            target[part] = copy.deepcopy(below)
        elif isinstance(target, list) and isinstance(part, int) and part >= len(target):
            target.extend(copy.deepcopy(source[len(target) : part + 1]))
        target, source = target[part], below


def lab_config() -> dict[str, Any]:
    """A fresh copy of the lab config with the stack's names."""
    config = copy.deepcopy(base_config())
    names(STACK)(config)
    return config


def case_config(case: Case) -> dict[str, Any]:
    """A fresh copy of the lab config with the stack's names, valid, then with the case's key broken."""
    config = lab_config()
    seed_missing(config, case.path)
    cfg.validate({**config, TOKEN_KEY: TOKEN})  # the control: without the case, the config is valid
    if case.path != TOKEN_KEY:
        set_path(config, case.path, case.value)
    return config


def payload_config(key: str, payloads: list[str]) -> dict[str, Any]:
    """The lab config with one VM per payload: distinct ids and names, spread over the nodes, valid
    (the control) until each VM gets its payload in ``key``."""
    config = lab_config()
    nodes = [node["name"] for node in config["proxmox"]["nodes"]]
    config["vms"] = [{"id": 900 + i, "name": f"payload{i}", "node": nodes[i % len(nodes)]} for i in range(len(payloads))]
    cfg.validate({**config, TOKEN_KEY: TOKEN})
    for vm, payload in zip(config["vms"], payloads, strict=True):
        vm[key] = payload
    return config


def write_stack_file(worker: Worker, config: dict[str, Any]) -> None:
    """The whole stack file rewritten, with the secret token LabStack set. Not LabStack.reconfigure:
    it merges the top-level keys into the file, so an earlier case's ``adopt`` or ``vm`` would survive."""
    worker.stack.config = config
    document = copy.deepcopy(worker.pristine)
    token = document["config"][PREFIX + TOKEN_KEY]
    document["config"] = {PREFIX + k: v for k, v in config.items()}
    document["config"][PREFIX + TOKEN_KEY] = token
    worker.stack_file.write_text(yaml.safe_dump(document))


def configure(worker: Worker, case: Case, config: dict[str, Any]) -> None:
    """The stack file, then the secret where the case is about it."""
    write_stack_file(worker, config)
    if case.path != TOKEN_KEY:
        return
    stack = worker.stack.stack
    if case.value is DELETE:
        stack.remove_config(TOKEN_KEY)
    elif case.value is PLAINTEXT:
        stack.set_config(TOKEN_KEY, auto.ConfigValue(TOKEN, secret=False))
    else:
        stack.set_config(TOKEN_KEY, auto.ConfigValue(case.value, secret=True))


def case_preview(worker: Worker, case: Case, tally: Tally) -> Refusal:
    configure(worker, case, case_config(case))
    return refused_preview(worker.stack, tally)


def payload_preview(worker: Worker, key: str, tally: Tally) -> Refusal:
    write_stack_file(worker, payload_config(key, VM_PAYLOADS))
    return refused_preview(worker.stack, tally)


def resource_events(events: list[auto.EngineEvent]) -> list[tuple[str, str, str]]:
    """(event kind, resource type, urn) of every step the engine reported."""
    found = []
    for event in events:
        for kind in ("resource_pre_event", "res_outputs_event", "res_op_failed_event"):
            step = getattr(event, kind)
            if step is not None:
                found.append((kind, step.metadata.type, step.metadata.urn))
        if event.policy_event is not None:
            found.append(("policy_event", "", event.policy_event.resource_urn or ""))
    return found


@dataclass
class Refusal:
    """A preview the program stopped: what the operator read, and the lines of its error diagnostics."""

    shown: str
    errors: list[str]

    def error_naming(self, key: str) -> str:
        """The error line that names ``pve-ceph-ha:<key>`` (or a part of it: storage.content[0])."""
        names_key = re.compile(re.escape(PREFIX + key) + r"(?=[ .\[=:])")
        line = next((line for line in self.errors if names_key.search(line)), None)
        assert line is not None, f"no error names {PREFIX}{key}:\n{self.shown}"
        assert line.startswith(f"config error: {PREFIX}"), line
        assert line in self.shown, f"the error is not in the preview's output:\n{self.shown}"
        return line


def refused_preview(stack: LabStack, tally: Tally) -> Refusal:
    """`pulumi preview` of the stack as configured: refused by the program without a traceback,
    before any resource operation (the engine stepped the root stack only, the program registered
    nothing else)."""
    events: list[auto.EngineEvent] = []
    output: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(auto.CommandError) as info:
        stack.stack.preview(on_output=output.append, on_event=events.append, color="never")
    tally.preview_seconds.append(time.monotonic() - t0)
    shown = f"{info.value}\n" + "\n".join(output)
    diagnostics = [e.diagnostic_event for e in events if e.diagnostic_event is not None]
    everything = shown + "\n" + "\n".join(d.message for d in diagnostics)
    assert "Traceback" not in everything, everything

    assert any(e.summary_event is not None for e in events), "the event stream did not reach the summary"
    steps = resource_events(events)
    assert any(kind == "resource_pre_event" and type_ == ROOT_TYPE for kind, type_, _ in steps), steps
    assert [s for s in steps if s[1] != ROOT_TYPE] == [], steps
    registered = {m.group(1) for d in diagnostics for m in re.finditer(r"registering resource: ty=([^,\s]+)", d.message)}
    assert registered <= {ROOT_TYPE}, registered
    return Refusal(shown, [line for d in diagnostics if d.severity == "error" for line in d.message.splitlines()])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_is_refused_before_any_resource_operation(run: Run, case: Case, request: pytest.FixtureRequest) -> None:
    t0 = time.monotonic()
    run.cases.tried.append(case.id)
    refusal = run.refusal(request)

    # refused by the program, naming the key and the rule, in what the operator reads
    line = refusal.error_naming(case.key)
    assert case.rule in line, line

    # the secret never shows, in any of its shapes
    if case.path == TOKEN_KEY and isinstance(case.value, str):
        assert case.value not in refusal.shown
    if case.value is PLAINTEXT:
        assert TOKEN.split("=", 1)[1] not in refusal.shown

    # nothing appeared in the lab (the pool and the client are checked once, at the end: 0.6 s each over SSH)
    assert f"{STACK}-rbd" not in storages()
    run.cases.passed.append(case.id)
    run.cases.seconds += time.monotonic() - t0


@pytest.mark.parametrize("key", VM_KEYS)
def test_every_payload_in_a_vm_key_is_refused_in_one_preview(run: Run, key: str, request: pytest.FixtureRequest) -> None:
    t0 = time.monotonic()
    run.payloads.tried.append(key)
    refusal = run.refusal(request)

    # every VM's payload named, in one refusal: the program reports every problem at once
    for i in range(len(VM_PAYLOADS)):
        refusal.error_naming(f"vms[{i}].{key}")
    # and nothing else: but for the payloads the config is valid
    named = re.compile(re.escape(PREFIX) + r"vms\[\d+\]\." + re.escape(key) + " = ")
    others = [line for line in refusal.errors if line.startswith("config error:") and not named.search(line)]
    assert others == [], others

    assert f"{STACK}-rbd" not in storages()
    run.payloads.passed.append(key)
    run.payloads.seconds += time.monotonic() - t0


def test_nothing_appeared_in_the_lab_and_summary(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    assert not pool_exists(f"{STACK}-pool")
    assert client_caps(STACK) is None
    assert f"{STACK}-rbd" not in storages()
    seconds = time.monotonic() - run.started
    with capsys.disabled():
        print(f"\n  {run.cases.summary(f'bad config through the engine, {len(CASES)} cases')}")
        print(f"  {run.payloads.summary(f'payloads through the engine, {len(VM_PAYLOADS)} in each of {len(VM_KEYS)} VM keys, one preview a key')}")
        print(f"  module: {seconds:.1f} s (stack setup {run.setup_seconds:.1f} s)")
    assert run.cases.tried or run.payloads.tried, "run the whole module: the tests record what was tried"
