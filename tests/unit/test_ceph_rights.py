"""components/ceph_rights.py and ssh.as_ceph_id: the program's Ceph identity, its caps, and what a refusal says."""

from __future__ import annotations

from clients import ceph_cli
from clients.ssh import RemoteError, Result, as_ceph_id, check
from components import ceph_rights


def test_the_caps_name_the_stacks_pool_client_and_scrub_options():
    caps = ceph_rights.program_caps("rbd-pool", "proxmox")
    mon = caps["mon"].split(", ")
    assert mon[0] == "allow r" and caps["osd"] == "profile rbd pool=rbd-pool"
    assert 'allow command "osd pool create" with pool=rbd-pool' in mon
    assert 'allow command "auth get-or-create" with entity=client.proxmox' in mon
    assert 'allow command "config set" with who=osd name=osd_scrub_end_hour' in mon
    assert 'allow command "config-key get" with key=pve-ceph-ha/scrub-window/owner' in mon
    assert not any("osd pool delete" in g for g in mon)
    bare = ceph_rights.program_caps("p", "c", scrub_window=False, pool_deletion=True)["mon"]
    assert 'allow command "osd pool delete" with pool=p' in bare and "config" not in bare


def test_every_command_the_program_sends_has_its_clause():
    commands = [
        ceph_cli.pool_create("rbd-pool", 32),
        ceph_cli.pool_set("rbd-pool", "size", 3),
        ceph_cli.auth_get_or_create("proxmox", ceph_cli.Caps.for_profile("profile-rbd", "rbd-pool")),
        ceph_cli.auth_caps("proxmox", ceph_cli.Caps.for_profile("profile-rbd", "rbd-pool")),
        ceph_cli.auth_del("proxmox"),
        ceph_cli.config_set("osd", "osd_scrub_begin_hour", 22),
        ceph_cli.config_key_set("pve-ceph-ha/scrub-window/owner", "x"),
        ceph_cli.pool_list_detail(),
    ]
    mon = ceph_rights.program_caps("rbd-pool", "proxmox")["mon"]
    for argv in commands:
        clause = ceph_rights.cap_for(argv)
        assert clause and clause.startswith("mon '"), argv
        assert clause.removeprefix("mon '").removesuffix("'") in mon.split(", "), argv
    assert ceph_rights.cap_for(ceph_cli.rbd_ls("rbd-pool")) == "osd 'profile rbd pool=rbd-pool'"


def test_the_id_goes_last_and_admin_changes_nothing():
    argv = ceph_cli.pool_create("rbd-pool", 32)
    assert as_ceph_id(argv, "admin") == argv
    assert as_ceph_id(argv, "pulumi") == [*argv, "--id", "pulumi"]
    assert as_ceph_id(["python3", "-", "x"], "pulumi")[-2:] == ["--id", "pulumi"]
    assert as_ceph_id(["dpkg-query", "-W"], "pulumi") == ["dpkg-query", "-W"]
    reads = ["python3", "-", ceph_cli.MON_READS, ceph_cli.mon_command(ceph_cli.pool_list_detail()), "--id", "pulumi"]
    assert ceph_cli.command_name(reads) == "ceph osd pool ls"


def test_a_refusal_names_the_missing_clause():
    denied = Result(13, "", "Error EACCES: access denied\n")
    try:
        check(denied, "ceph config-key get pve-ceph-ha/scrub-window/owner")
    except RemoteError as exc:
        text = str(exc)
    assert text.startswith("ceph config-key get pve-ceph-ha/scrub-window/owner failed (exit 13): Error EACCES: access denied; ")
    assert "its caps need mon 'allow command \"config-key get\" with key=pve-ceph-ha/scrub-window/owner'" in text


def test_the_ha_options_owner_key_only_when_the_stack_sets_them():
    from components.ha_options import OWNER_KEY

    assert OWNER_KEY not in ceph_rights.program_caps("rbd-pool", "proxmox")["mon"]
    mon = ceph_rights.program_caps("rbd-pool", "proxmox", scrub_window=False, ha_options=True)["mon"]
    assert all(f'allow command "config-key {verb}" with key={OWNER_KEY}' in mon for verb in ("get", "set", "rm"))
    assert "osd_scrub" not in mon and ceph_rights.SCRUB_KEY not in mon
