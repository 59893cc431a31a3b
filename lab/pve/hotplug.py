"""What a config change does to a running VM: applied now (hot-plugged) or left pending until the
VM's next start. From qemu-server src/PVE/QemuServer.pm:

- ``$fast_plug_option`` (description, hookscript, lock, migrate_downtime, migrate_speed, name,
  onboot, protection, shares, startup, tags, vmstatestorage, and every cloud-init option:
  ``$confdesc_cloudinit``) is written at once;
- ``vmconfig_hotplug_pending`` then tries each pending key under the VM's ``hotplug`` features
  (``parse_hotplug_features``; unset or ``1`` is the schema's default ``network,disk,usb``, ``0`` none):
  - ``netN``: ``vmconfig_update_net``. A NIC that exists and changes only its bridge, tag, rate,
    firewall, link_down or mtu is changed live, hotplug or not; anything else (a new NIC, a new
    model or MAC) needs the ``network`` feature (unplug and plug);
  - a drive: ``vmconfig_update_disk`` with the ``disk`` feature; never efidisk0, tpmstate0, ideN
    or sataN. A drive of the same volume whose cache, discard, aio, ... change cannot be changed
    live (pending); its throttling can. The cloud-init drive is regenerated after the others;
  - ``memory`` needs the ``memory`` feature, ``vcpus`` the ``cpu`` one; ``cores``, ``sockets``,
    ``cpu`` and every other key are never hot-plugged (``die "skip\\n"``);
  - a pending deletion (``vmconfig_delete_or_detach_drive``, ``vm_deviceunplug``): a NIC with
    ``network``, a drive with ``disk``; the fast-plug options at once.

Pure: the model's config and pending dictionaries in, the keys applied out.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

from fakepve.qemu import DRIVE_KEY, split_drive

DEFAULT_FEATURES = "network,disk,usb"  # $confdesc->{hotplug}->{default}
FAST_PLUG = frozenset(
    {
        "description",
        "hookscript",
        "lock",
        "migrate_downtime",
        "migrate_speed",
        "name",
        "onboot",
        "protection",
        "shares",
        "startup",
        "tags",
        "vmstatestorage",
        # $confdesc_cloudinit
        "cicustom",
        "cipassword",
        "citype",
        "ciupgrade",
        "ciuser",
        "nameserver",
        "searchdomain",
        "sshkeys",
    }
)
CLOUDINIT_KEY = re.compile(r"ipconfig\d+")
# vmconfig_update_net: what changes without unplugging the NIC
NET_LIVE = frozenset({"bridge", "tag", "rate", "firewall", "link_down", "mtu", "trunks"})
# vmconfig_update_disk: the throttling it changes live (qemu_block_set_io_throttle)
THROTTLE = ("mbps", "mbps_rd", "mbps_wr", "iops", "iops_rd", "iops_wr")
DISK_LIVE = frozenset({*THROTTLE, *(f"{k}_max" for k in THROTTLE), *(f"{k}_max_length" for k in THROTTLE), "size"})
NO_DISK_HOTPLUG = re.compile(r"(efidisk|tpmstate|ide|sata)\d+")


def features(config: MutableMapping[str, Any]) -> set[str]:
    """parse_hotplug_features of the VM's ``hotplug`` option."""
    value = str(config.get("hotplug", "1"))
    if value == "0":
        return set()
    return {f.strip() for f in (DEFAULT_FEATURES if value == "1" else value).split(",") if f.strip()}


def _net_props(value: str) -> dict[str, str]:
    out = {}
    for i, part in enumerate(str(value).split(",")):
        key, _, val = part.partition("=")
        if i == 0 and "=" in part and key not in NET_LIVE | {"model", "macaddr"}:
            out["model"], out["macaddr"] = key, val  # virtio=BC:24:11:..
        else:
            out[key] = val
    return out


def _net_live(old: str | None, new: str, feats: set[str]) -> bool:
    if "network" in feats:
        return True
    if old is None:
        return False
    before, after = _net_props(old), _net_props(new)
    return all(before.get(k) == after.get(k) for k in set(before) | set(after) if k not in NET_LIVE)


def _disk_live(key: str, old: str | None, new: str, feats: set[str]) -> bool:
    if "disk" not in feats or NO_DISK_HOTPLUG.fullmatch(key):
        return False
    if old is None:
        return True  # vm_deviceplug
    (old_volume, old_props), (new_volume, new_props) = split_drive(str(old)), split_drive(str(new))
    if old_volume != new_volume:
        return True  # unplug and plug
    changed = {k for k in set(old_props) | set(new_props) if old_props.get(k) != new_props.get(k)}
    return changed <= DISK_LIVE


def applies_now(key: str, old: Any, new: Any, feats: set[str]) -> bool:
    """Whether PVE applies KEY's pending NEW (None: a deletion) on a running VM at once."""
    if key in FAST_PLUG or CLOUDINIT_KEY.fullmatch(key):
        return True
    if re.fullmatch(r"net\d+", key):
        return "network" in feats if new is None else _net_live(old, str(new), feats)
    if DRIVE_KEY.match(key):
        if new is None:
            return "disk" in feats and not NO_DISK_HOTPLUG.fullmatch(key)
        return _disk_live(key, None if old is None else str(old), str(new), feats)
    if key == "memory":
        return "memory" in feats
    if key == "vcpus":
        return "cpu" in feats
    return False


def hotplug_pending(config: MutableMapping[str, Any], pending: MutableMapping[str, Any]) -> list[str]:
    """Apply what PVE applies at once on a running VM; the rest stays pending. The keys applied, sorted."""
    feats = features(config)
    done = []
    for key in sorted(pending):
        new = pending[key]
        if applies_now(key, config.get(key), new, feats):
            if new is None:
                config.pop(key, None)
            else:
                config[key] = new
            del pending[key]
            done.append(key)
    return done
