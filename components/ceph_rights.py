"""The smallest Ceph identity for the runbook's Ceph steps (docs/permissions.md): the caps of the
cephx client the program's Ceph commands run as (``ceph.admin.clientId``), instead of client.admin.

Each command the program sends has one cap clause that allows it (:data:`COMMANDS`), narrowed with
Ceph's ``with <argument>=<value>`` to the stack's pool, its client and the scrub window's options
(Ceph MonCap: a ``allow command`` grant with argument constraints). Reads (``status``, ``health``,
``osd pool ls``, ``config get``) need ``allow r``; the pool's objects (``rbd pool init``, ``rbd ls``)
need ``profile rbd pool=<pool>`` on the OSDs. Measured against the lab's Ceph (Pacific): each
clause is needed (tests/integration/test_permissions.py takes one away), and a command outside
them is refused with ``Error EACCES: access denied``.

What this identity can still do: create, change the caps of and delete the stack's one client
(``client.<ceph.client.name>``), whatever caps it gives it; Ceph does not hold a new client's caps
to its creator's. Keep its keyring as you would keep any key that can make keys.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from components.ceph_scrub import KEYS, OWNER_KEY
from components.ha_options import OWNER_KEY as OPTIONS_KEY

SCRUB_KEY = OWNER_KEY  # the scrub window's owner, in the config-key store
# OPTIONS_KEY: the owner of datacenter.cfg's HA options (ha.shutdownPolicy, ha.crs, ha.rebalanceOnStart)
SCRUB_OPTIONS = tuple(KEYS.values())  # osd_scrub_begin_hour, osd_scrub_end_hour

# (the command's words after `ceph`, the argument its grant is narrowed with: "pool" | "entity" | "key" | "who-name")
COMMANDS: tuple[tuple[str, str], ...] = (
    ("osd pool create", "pool"),
    ("osd pool set", "pool"),
    ("osd pool application enable", "pool"),  # rbd pool init
    ("osd pool delete", "pool"),  # allowPoolDeletion only
    ("auth get-or-create", "entity"),
    ("auth get", "entity"),
    ("auth caps", "entity"),
    ("auth del", "entity"),
    ("config set", "who-name"),
    ("config rm", "who-name"),
    ("config-key get", "key"),
    ("config-key set", "key"),
    ("config-key rm", "key"),
)
READS = ("status", "health", "osd pool ls", "config get")


def _grant(command: str, narrowed: str, pool: str, client: str, keys: Sequence[str] = (SCRUB_KEY,)) -> list[str]:
    if narrowed == "pool":
        return [f'allow command "{command}" with pool={pool}']
    if narrowed == "entity":
        return [f'allow command "{command}" with entity=client.{client}']
    if narrowed == "key":
        return [f'allow command "{command}" with key={key}' for key in keys]
    return [f'allow command "{command}" with who=osd name={option}' for option in SCRUB_OPTIONS]


def program_caps(pool: str, client: str, *, scrub_window: bool = True, pool_deletion: bool = False, ha_options: bool = False) -> dict[str, str]:
    """The mon and osd caps of the program's Ceph identity for a stack's pool and client (HA_OPTIONS:
    the stack sets datacenter.cfg's HA options, whose owner is kept in the config-key store)."""
    grants = ["allow r"]
    keys = [key for key, used in ((SCRUB_KEY, scrub_window), (OPTIONS_KEY, ha_options)) if used]
    for command, narrowed in COMMANDS:
        if command == "osd pool delete" and not pool_deletion:
            continue
        if (narrowed == "who-name" and not scrub_window) or (narrowed == "key" and not keys):
            continue
        grants += _grant(command, narrowed, pool, client, keys)
    return {"mon": ", ".join(grants), "osd": f"profile rbd pool={pool}"}


def cap_for(words: Sequence[str]) -> str | None:
    """The cap clause that allows a `ceph` or `rbd` command (its words, the tool first), or None."""
    if len(words) < 2:
        return None
    tool, rest = words[0], list(words[1:])
    if tool == "rbd":
        pool = rest[rest.index("-p") + 1] if "-p" in rest[:-1] else (rest[2] if rest[:2] == ["pool", "init"] and len(rest) > 2 else "<pool>")
        return f"osd 'profile rbd pool={pool}'" + (
            f", mon 'allow command \"osd pool application enable\" with pool={pool}'" if rest[:2] == ["pool", "init"] else ""
        )
    text = " ".join(rest)
    for command, narrowed in sorted(COMMANDS, key=lambda c: -len(c[0])):
        if text == command or text.startswith(command + " "):
            args = text[len(command) :].split()
            pool = args[0] if args else "<pool>"
            client = args[0].removeprefix("client.") if args else "<client>"
            if narrowed == "who-name" and len(args) >= 2:
                return f"mon 'allow command \"{command}\" with who={args[0]} name={args[1]}'"
            if narrowed == "key" and args:
                return f"mon 'allow command \"{command}\" with key={args[0]}'"
            return "mon '" + _grant(command, narrowed, pool, client)[0] + "'"
    if any(text == r or text.startswith(r + " ") for r in READS):
        return "mon 'allow r'"
    return None


def denied_hint(what: str) -> str:
    """What to add when Ceph answered a command with EACCES (the identity lacks its cap)."""
    words = shlex.split(what) if what else []
    clause = cap_for(words)
    grant = f"its caps need {clause}" if clause else "its caps do not allow it"
    return f"; the program's Ceph identity (ceph.admin.clientId) was refused: {grant} (docs/permissions.md: `ceph auth caps client.<id> mon '...' osd '...'`)"


def setup_commands(ceph_id: str, caps: dict[str, str], ssh_user: str, keyring: str = "") -> list[str]:
    """The commands (on the admin node, as client.admin) that make the identity, its keyring where
    the CLI looks for it (KEYRING: another folder's), and hand it to SSH_USER."""
    keyring = keyring or f"/etc/ceph/ceph.client.{ceph_id}.keyring"
    return [
        f"ceph auth get-or-create client.{ceph_id} mon {shlex.quote(caps['mon'])} osd {shlex.quote(caps['osd'])} -o {keyring}",
        f"chown {ssh_user} {keyring} && chmod 0400 {keyring}",
    ]
