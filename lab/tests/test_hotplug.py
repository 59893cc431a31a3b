"""lab/pve/hotplug.py: what PVE applies at once on a running VM, and what waits for the next start."""

from __future__ import annotations

from lab.pve.hotplug import applies_now, features, hotplug_pending

NET0 = "virtio=BC:24:11:00:00:01,bridge=vmbr0"
SCSI0 = "ceph-rbd:vm-101-disk-0,cache=writeback,discard=on,size=32G"


def test_the_default_features_are_network_disk_usb() -> None:
    assert features({}) == features({"hotplug": "1"}) == {"network", "disk", "usb"}
    assert features({"hotplug": "0"}) == set()
    assert features({"hotplug": "disk,memory"}) == {"disk", "memory"}


def test_nics_and_disks_are_hot_plugged_memory_and_cores_wait() -> None:
    config = {"memory": "2048", "cores": "2", "net0": NET0, "scsi0": SCSI0}
    pending = {
        "memory": "4096",
        "cores": "4",
        "net1": "virtio=BC:24:11:00:00:02,bridge=vmbr0,tag=20",
        "scsi1": "ceph-rbd:vm-101-disk-1,size=4G",
        "ciuser": "ops",
        "ipconfig0": "ip=dhcp",
    }
    assert hotplug_pending(config, pending) == ["ciuser", "ipconfig0", "net1", "scsi1"]
    assert pending == {"memory": "4096", "cores": "4"}
    assert config["net1"].endswith("tag=20") and config["memory"] == "2048"


def test_without_network_hotplug_only_a_nics_bridge_and_tag_change_live() -> None:
    feats = features({"hotplug": "disk"})
    assert applies_now("net0", NET0, NET0 + ",tag=30", feats)  # vmconfig_update_net: no unplug
    assert not applies_now("net0", NET0, "e1000=BC:24:11:00:00:01,bridge=vmbr0", feats)  # a new model
    assert not applies_now("net1", None, NET0, feats)  # a new NIC


def test_a_disks_cache_change_waits_its_throttling_and_size_do_not() -> None:
    feats = features({})
    assert not applies_now("scsi0", SCSI0, SCSI0.replace("writeback", "none"), feats)
    assert applies_now("scsi0", SCSI0, SCSI0 + ",iops_rd=100", feats)
    assert applies_now("scsi0", SCSI0, SCSI0.replace("32G", "40G"), feats)
    assert not applies_now("ide0", None, "ceph-rbd:vm-101-disk-2", feats)  # IDE is never hot-plugged
    assert applies_now("scsi1", "ceph-rbd:vm-101-disk-1", None, feats)  # unplugged
    assert applies_now("memory", "2048", "4096", features({"hotplug": "memory"}))
