"""The coupling of lab.pve to fakepve, pinned: the version, and the source of every fakepve
method the lab overrides or relies on (its `_routes_<x>` extension point, the hard-coded
handlers it overrides, the internals it calls). A fakepve upgrade that changes any of them
fails lab/tests/test_pve.py (and the server refuses to start) instead of silently changing
what the lab emulates. After reviewing a change, re-pin with:

    .venv/bin/python -m lab.pve.server --pin-fakepve

A leaf module (it imports no other lab.pve module): the functions take the lab's class.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
from pathlib import Path

FAKEPVE_VERSION = "0.5.0"

# Overridden by lab.pve.app.LabPve or one of its API/model mixins -- fakepve source hash
HOOKS = {
    "_active_store": "61034f514d0a0abe",
    "_answer": "e1fd769c4d7eb012",
    "_apply_config": "052e991230d8487f",
    "_build_app": "2ea2139d249adf97",
    "_cluster_status": "c3885402df2060b2",
    "_config_get": "75af5818d7494645",
    "_config_priv": "b7852cbbe83122c4",
    "_content_create": "9d017eda2e145dd5",
    "_content_delete": "8ba315369674a8e7",
    "_content_info": "d6a9e1dc31544b42",
    "_content_list": "942e290e5cf507bf",
    "_do_reboot": "6b9c54f4bf003020",
    "_do_shutdown": "b1c84de5db9c65a9",
    "_do_start": "a345c844aff21b17",
    "_do_stop": "1837ba752e59c244",
    "_generic": "a746b64b9538a399",
    "_ha_request": "10616010a89b6050",
    "_ns_list": "9103a9c64fbd244a",
    "_ns_status": "0125db4a9460067a",
    "_permissions": "fbb40567d3631fd1",
    "_qm_alloc": "21ae536d385cef9a",
    "_qm_check_drive": "802d6de748e1ef91",
    "_qm_clone": "7bdb558d9ee8798a",
    "_qm_create": "e5759131df02c662",
    "_qm_destroy": "a716780a5ba444cb",
    "_qm_free": "bb4dc1e1c0856733",
    "_qm_new_drive": "06312740fe40668f",
    "_qm_rename_volume": "ac158d94b878b9b8",
    "_qm_template": "532aaac8b2a6694f",
    "_record": "cd2464c6b3fb479e",
    "_resources": "63bd4f87ba77b7ed",
    "_routes_access": "999c0cd97efc365b",
    "_sc_create": "f9e72ed224d1466a",
    "_sc_delete": "a2ce8c749b83e200",
    "_sc_update": "b24a94705a0b9856",
    "_status_item": "6690d64c59859fc5",
    "_version": "11eb4288513ad8ba",
    "_vm": "ab831f6f9059fae6",
    "allowed": "106bb214a51587e7",
    "ceph_io": "92156cfa21e74f79",
    "start": "864bc9664256367c",
    "stop": "651ff27a3e3f8b00",
    "task": "4d6991894fec0cae",
}

# Called or relied upon, not overridden.
USED = {
    "_check": "dcafcd704873804e",
    "_check_access": "b0b096248b3b1e8a",
    "_check_acl_path": "2b241c501b808245",
    "_check_enabled": "54a487d11358655f",
    "_check_lock": "17f3baf1a512888f",
    "_complete": "8898f9113171aa61",
    "_failure_matches": "3b611405e57ed391",
    "_middleware": "f00a742e04aafcbb",
    "_need_running": "2d540b57e5a43aeb",
    "_node_stats": "e3510e8cf534ba20",
    "_parse_volname": "7fa0a2aeae7dab96",
    "_powerdown": "13287561fbbeeda2",
    "_qm_image_store": "9c5565cfaec0a462",
    "_qm_perm": "13a07377931d27f4",
    "_register_stateful": "7f20d248009e584a",
    "_stateful_handler": "0c7f065becd16f6a",
    "_storage_enabled": "f3c949e518918efb",
    "_vm_status": "60d9e13ee4356985",
    "_volumes": "6734f59e48f879b9",
    "acquire": "dd3853311df076b5",
    "answer": "e36314b9cdbb278d",
    "check_permissions": "aac3c9827a4f4db7",
    "errors_for": "fc4db28c0edcd6bd",
    "fail": "84148331ca18a0fa",
    "find": "63a201b09a04d0af",
    "need_quorum": "67b14dfa053165cc",
    "pause": "67d29ea8e1cdc032",
    "release": "4f67fcf0387b9e94",
    "require": "dcec5a32b9af7810",
    "resolve": "7aacd07f523d3dd8",
    "store_file": "b337d264e125d364",
}


def source_hash(name: str) -> str | None:
    from fakepve import FakePve

    member = getattr(FakePve, name, None)
    if member is None:
        return None
    text = inspect.getsource(member)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changed_hooks() -> list[str]:
    """Names whose fakepve source differs from the pinned hash (or that vanished)."""
    return [name for name, digest in {**HOOKS, **USED}.items() if source_hash(name) != digest]


def overridden_names(cls: type) -> list[str]:
    """The fakepve methods CLS (the lab's LabPve) overrides, in itself or its mixins."""
    from fakepve import FakePve

    own: set[str] = set()
    for klass in cls.__mro__[: cls.__mro__.index(FakePve)]:
        own |= set(vars(klass))
    return sorted(n for n in own if n in dir(FakePve) and not n.startswith("__"))


def update(cls: type) -> None:
    """Re-pin HOOKS (what CLS overrides) and USED in this file."""
    path = Path(__file__)
    text = path.read_text()
    hooks = {n: source_hash(n) for n in overridden_names(cls)}
    used = {n: source_hash(n) for n in USED_NAMES if n not in hooks}
    for var, table in (("HOOKS", hooks), ("USED", used)):
        body = "".join(f'    "{n}": "{h}",\n' for n, h in sorted(table.items()))
        text = re.sub(rf"^{var} = {{\n.*?^}}\n", f"{var} = {{\n{body}}}\n", text, count=1, flags=re.S | re.M)
    path.write_text(text)
    print(f"pinned {len(hooks)} overridden and {len(used)} used fakepve methods")


USED_NAMES = (
    "_register_stateful",
    "_stateful_handler",
    "_build_app",
    "_middleware",
    "_failure_matches",
    "_check_enabled",
    "_volumes",
    "_qm_image_store",
    "_powerdown",
    "_vm_status",
    "_check_lock",
    "_need_running",
    "_storage_enabled",
    "_complete",
    "find",
    "fail",
    "errors_for",
    "need_quorum",
    "pause",
    "acquire",
    "release",
    "answer",
    "_content_info",
    "_parse_volname",
    "store_file",
    "resolve",
    "check_permissions",
    "_check",
    "_check_acl_path",
    "require",
    "_qm_perm",
    "_check_access",
)

if __name__ == "__main__":
    bad = changed_hooks()
    print("changed: " + ", ".join(bad) if bad else "fakepve hooks unchanged")
    sys.exit(1 if bad else 0)
