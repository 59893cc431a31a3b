"""The lab's real Ceph cluster (Debian's 16.2 packages), deployed by hand as Ceph's manual
deployment guide does: ceph-authtool keys, monmaptool, `ceph-mon --mkfs`, `ceph osd new`,
`ceph-osd --mkfs`.

Three monitors on 127.10.10.101-103 (v2 3300 + v1 6789), one manager, three memstore OSDs
on 127.10.10.101; data, logs, sockets and keys under .lab/ceph/.

Networks, as a real cluster separates them (the runbook's best practice 8): `public_network`
127.10.10.0/24 (monitors, manager, the OSDs' public side, every client) and `cluster_network`
127.10.30.0/24 (the OSDs' replication and heartbeats: each OSD's cluster_addr is 127.10.30.1),
both in the mon config db (CONFIG_DB), so `ceph config get mon public_network` answers them and
a test can break them with `ceph config set|rm`. On Linux every 127.0.0.0/8 address is local
(the `lo` route `local 127.0.0.0/8`), so the OSDs bind 127.10.30.1 without configuring it.

What is deliberately left at Ceph's defaults, so the runbook's checks stay real:
osd_pool_default_size 3 and mon_max_pg_per_osd 250 (so `ceph osd pool create rbd-pool 256`
fails with ERANGE on 3 OSDs), the PG autoscaler, the POOL_APP_NOT_ENABLED warning.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import LabError, kill_all, paths, running, say, spawn, step, stop, wait_for

MONS = {"mon1": "127.10.10.101", "mon2": "127.10.10.102", "mon3": "127.10.10.103"}
ADMIN_HOST = "127.10.10.101"  # the admin node; the manager and the OSDs live there too
PUBLIC_NETWORK = "127.10.10.0/24"  # ceph's public_network: the monitors' and ADMIN_HOST's
CLUSTER_NETWORK = "127.10.30.0/24"  # ceph's cluster_network: the OSDs' back side
OSD_CLUSTER_ADDR = "127.10.30.1"  # every OSD's cluster_addr, inside CLUSTER_NETWORK
MGR = "mgr1"
OSDS = (0, 1, 2)
MON_PORT, MON_V2_PORT = 6789, 3300

# The manager loads every module it finds unless told not to; the always-on ones
# (balancer, crash, devicehealth, orchestrator, pg_autoscaler, progress, rbd_support,
# status, telemetry, volumes) and iostat stay.
MGR_DISABLED_MODULES = (
    "alerts",
    "cephadm",
    "dashboard",
    "diskprediction_local",
    "influx",
    "insights",
    "k8sevents",
    "localpool",
    "mds_autoscaler",
    "mirroring",
    "nfs",
    "osd_support",
    "prometheus",
    "restful",
    "rook",
    "selftest",
    "snap_schedule",
    "stats",
    "telegraf",
    "test_orchestrator",
    "zabbix",
)

BOOT_DEADLINE = 120.0  # seconds, from nothing to HEALTH_OK with all PGs active+clean


def _addrvec(ip: str) -> str:
    return f"[v2:{ip}:{MON_V2_PORT},v1:{ip}:{MON_PORT}]"


def mon_host() -> str:
    return ",".join(_addrvec(ip) for ip in MONS.values())


def daemon_names() -> list[str]:
    """Pid-file names of the Ceph daemons."""
    return [f"ceph-mon.{m}" for m in MONS] + [f"ceph-mgr.{MGR}"] + [f"ceph-osd.{i}" for i in OSDS]


# --------------------------------------------------------------------------- ceph.conf

# Only what the daemons need to find each other and their files, the single-host CRUSH rule
# (needed before `ceph-mon --mkfs`), memstore, and the silencers for a lab's HEALTH_OK.
# Options a test or a drift check may change stay out of here: a value in ceph.conf silently
# wins over `ceph config set`.
CONF = """\
# The lab's Ceph cluster, written by `python -m lab up`. Keep it minimal: an option set
# here silently wins over `ceph config set` (the lab's tunables are in the mon config db,
# see `ceph config dump`).
[global]
fsid = {fsid}
mon_host = {mon_host}
mon_initial_members = {mon_names}
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
run_dir = {run}
crash_dir = {crash}
# one host: replicate across OSDs, not hosts (must be set before ceph-mon --mkfs)
osd_crush_chooseleaf_type = 0

[client]
keyring = {ceph}/$cluster.$name.keyring

[mon]
mon_data = {ceph}/mon/$cluster-$id
log_file = {log}/$cluster-$name.log
mon_cluster_log_file = {log}/$cluster.log
# a fresh mgr would enable restful, nfs, ... : keep it small
mgr_initial_modules = iostat
auth_allow_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
# monitors that start together find each other at once: do not wait 5s for a late one
mon_election_timeout = 2
{mon_sections}
[mgr]
mgr_data = {ceph}/mgr/$cluster-$id
log_file = {log}/$cluster-$name.log
public_addr = {admin}
# do not even load the modules a lab never enables (saves ~100 MB)
mgr_disabled_modules = {mgr_disabled}

[osd]
osd_data = {ceph}/osd/$cluster-$id
log_file = {log}/$cluster-$name.log
public_addr = {admin}
# the OSDs' replication and heartbeat side, inside cluster_network (set in the mon config db):
# an explicit address, since no interface carries one in 127.10.30.0/24 for Ceph to pick (the
# kernel answers the whole 127.0.0.0/8 on lo)
cluster_addr = {osd_cluster_addr}
osd_objectstore = memstore
# memstore only writes its data out on a clean shutdown
osd_fast_shutdown = false
memstore_device_bytes = 4294967296
"""

# The lab's tunables, put into the mon config db once the monitors have quorum (so tests may
# change them with `ceph config set`).
CONFIG_DB = f"""\
[global]
# a lab on a disk more than 70% full must still be HEALTH_OK
mon_data_avail_warn = 5
# separate public and cluster networks, as the runbook asks of a real cluster
public_network = {PUBLIC_NETWORK}
cluster_network = {CLUSTER_NETWORK}
[mon]
# tests and the drift checks delete pools
mon_allow_pool_delete = true
# A multi-host cluster's failure reporting on one host. The monitors mark an OSD down once
# mon_osd_min_down_reporters (2) peers from distinct subtrees of mon_osd_reporter_subtree_level
# (default `host`) report it (OSDMonitor::check_failure). All the lab's OSDs are on one host, so a
# hung OSD's peers were one reporter and it stayed up until mon_osd_report_timeout (900 s): SLOW_OPS,
# `rbd ls` hung. Counting each OSD as its own subtree makes a hung OSD down after
# osd_heartbeat_grace (20 s), as on a cluster whose OSDs are on several hosts.
mon_osd_reporter_subtree_level = osd
# A dead client's watch on the lab's clock. A QEMU on a failed node leaves its RBD lock and its
# watch behind; librbd on the recovering node breaks the lock only once that watch is gone, which
# the OSDs decide after osd_client_watch_timeout (30 s, PrimaryLogPG do_osd_ops CEPH_OSD_OP_WATCH;
# librbd's Watcher registers with timeout 0, the OSD's default), while a live client pings its
# watches every objecter_tick_interval (5 s, Objecter::tick). On PVE the watch is long gone when
# HA recovers the VM: fencing waits for the node's agent lock to expire, 120 s. The lab runs PVE's
# clock 10x fast (LAB_TIME_SCALE 0.1: that expiry is 12 s) but Ceph's in real seconds, so a
# recovery waited 15 s more than PVE's own order of events allows. Both timers are scaled here:
# 30 s x 0.1 = 3 s, raised to 5 s so that a live client on a loaded 2-core machine never misses
# it, with the ping every 1 s; the order stays PVE's (watch gone at 5 s < fence at 12 s).
[osd]
osd_client_watch_timeout = 5
[client]
objecter_tick_interval = 1
[mgr]
mgr_stats_period = 1
"""


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def _conf_text(fsid: str) -> str:
    mon_sections = "".join(f"\n[mon.{name}]\npublic_addr = {ip}\n" for name, ip in MONS.items())
    return CONF.format(
        fsid=fsid,
        mon_host=mon_host(),
        mon_names=", ".join(MONS),
        run=paths.CEPH_RUN,
        crash=paths.CEPH_CRASH,
        ceph=paths.CEPH,
        log=paths.CEPH_LOG,
        admin=ADMIN_HOST,
        osd_cluster_addr=OSD_CLUSTER_ADDR,
        mon_sections=mon_sections,
        mgr_disabled=",".join(MGR_DISABLED_MODULES),
    )


# --------------------------------------------------------------------------- commands


def run(argv: list[str], *, input: str | None = None, timeout: float = 60) -> str:
    """Run a Ceph tool; LabError with its output when it fails."""
    try:
        p = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:.0f}s") from None
    if p.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def ceph(*args: str, input: str | None = None, timeout: float = 60) -> str:
    """The `ceph` CLI as client.admin of the lab."""
    argv = ["ceph", "--conf", str(paths.CEPH_CONF), "--connect-timeout", str(int(timeout)), *args]
    return run(argv, input=input, timeout=timeout + 5)


def ceph_json(*args: str, timeout: float = 30) -> Any:
    return json.loads(ceph(*args, "--format", "json", timeout=timeout))


def fsid() -> str:
    for line in paths.CEPH_CONF.read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() == "fsid":
            return v.strip()
    raise LabError(f"no fsid in {paths.CEPH_CONF}")


def _parallel(fns: list[Callable[[], None]]) -> None:
    """Run FNS in threads; re-raise the first error."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as e:  # re-raised below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- bring-up


def _new_keyring(path: Path, name: str, **caps: str) -> None:
    argv = ["ceph-authtool", "--create-keyring", str(path), "--gen-key", "-n", name]
    for service, cap in caps.items():
        argv += ["--cap", service, cap]
    run(argv)


def _bootstrap(log: Callable[[str], None]) -> None:
    """Keys, ceph.conf, monmap and the monitors' stores: the guide's 'monitor bootstrapping'."""
    c = paths.CEPH
    for d in (c, paths.CEPH_RUN, paths.CEPH_LOG, paths.CEPH_CRASH, c / "mon", c / "mgr", c / "osd"):
        d.mkdir(parents=True, exist_ok=True)
    new_fsid = str(uuid.uuid4())
    mon_kr, admin_kr, mgr_kr = paths.CEPH_MON_KEYRING, paths.CEPH_ADMIN_KEYRING, c / "mgr.keyring"
    with step("keys (ceph-authtool), monmap (monmaptool)", log):
        _new_keyring(mon_kr, "mon.", mon="allow *")
        _new_keyring(admin_kr, "client.admin", mon="allow *", osd="allow *", mds="allow *", mgr="allow *")
        _new_keyring(mgr_kr, f"mgr.{MGR}", mon="allow profile mgr", osd="allow *", mds="allow *")
        run(["ceph-authtool", str(mon_kr), "--import-keyring", str(admin_kr)])
        run(["ceph-authtool", str(mon_kr), "--import-keyring", str(mgr_kr)])
        for kr in (mon_kr, admin_kr, mgr_kr):
            kr.chmod(0o600)
        monmap = ["monmaptool", "--create", "--fsid", new_fsid]
        for name, ip in MONS.items():
            monmap += ["--addv", name, _addrvec(ip)]
        run([*monmap, str(paths.CEPH_MONMAP)])
        _write(paths.CEPH_CONF, _conf_text(new_fsid))
        mgr_dir = c / "mgr" / f"ceph-{MGR}"
        mgr_dir.mkdir(parents=True, exist_ok=True)
        mgr_kr.replace(mgr_dir / "keyring")

    def mkfs(name: str) -> Callable[[], None]:
        def mkfs_mon() -> None:
            run(["ceph-mon", "--conf", str(paths.CEPH_CONF), "--mkfs", "-i", name, "--monmap", str(paths.CEPH_MONMAP), "--keyring", str(mon_kr)])

        return mkfs_mon

    with step("ceph-mon --mkfs x3", log):
        _parallel([mkfs(name) for name in MONS])


def _start(name: str, argv: list[str]) -> bool:
    if running(name) is not None:
        return False
    spawn(name, argv)
    return True


def _create_osd(i: int) -> None:
    """`ceph osd new` with a fresh cephx secret, the OSD's keyring, `ceph-osd --mkfs`."""
    d = paths.CEPH / "osd" / f"ceph-{i}"
    if (d / "whoami").exists():
        return
    d.mkdir(parents=True, exist_ok=True)
    osd_uuid = str(uuid.uuid4())
    secret = run(["ceph-authtool", "--gen-print-key"]).strip()
    got = ceph("osd", "new", osd_uuid, str(i), "-i", "-", input=json.dumps({"cephx_secret": secret})).strip()
    if got != str(i):
        raise LabError(f"ceph osd new returned id {got!r}, expected {i}")
    run(["ceph-authtool", "--create-keyring", str(d / "keyring"), "--name", f"osd.{i}", "--add-key", secret])
    (d / "keyring").chmod(0o600)
    run(["ceph-osd", "--conf", str(paths.CEPH_CONF), "-i", str(i), "--mkfs", "--osd-uuid", osd_uuid])


def _healthy() -> dict[str, Any] | None:
    """`ceph status` when the cluster is HEALTH_OK, every monitor in quorum, the manager
    available, every OSD up and in, every pool created and every PG active+clean."""
    s = ceph_json("status", timeout=10)
    pg = s.get("pgmap", {})
    osd = s.get("osdmap", {})
    osd = osd.get("osdmap", osd)  # older layouts nest it
    states = {x["state_name"]: x["count"] for x in pg.get("pgs_by_state", [])}
    ok = (
        s.get("health", {}).get("status") == "HEALTH_OK"
        and len(s.get("quorum_names", [])) == len(MONS)
        and s.get("mgrmap", {}).get("available")
        and osd.get("num_osds") == len(OSDS)
        and osd.get("num_up_osds") == len(OSDS)
        and osd.get("num_in_osds") == len(OSDS)
        and pg.get("num_pools", 0) >= 1  # the mgr's device_health_metrics
        and pg.get("num_pgs", 0) > 0
        and states.get("active+clean", 0) == pg.get("num_pgs")
    )
    return s if ok else None


def wait_healthy(deadline: float = BOOT_DEADLINE) -> dict[str, Any]:
    return wait_for("Ceph HEALTH_OK with all PGs active+clean", _healthy, deadline, 0.5)


def up(log: Callable[[str], None] = say) -> dict[str, Any]:
    """Bring the cluster up (reusing what runs) and wait until it is healthy."""
    t0 = time.monotonic()
    fresh = not paths.CEPH_CONF.exists()
    if fresh:
        _bootstrap(log)
    conf = str(paths.CEPH_CONF)
    with step("start ceph-mon x3, ceph-mgr", log):
        for name in MONS:
            _start(f"ceph-mon.{name}", ["ceph-mon", "-f", "--conf", conf, "-i", name])
        _start(f"ceph-mgr.{MGR}", ["ceph-mgr", "-f", "--conf", conf, "-i", MGR])
    with step("monitors in quorum", log):
        wait_for(
            "3 monitors in quorum",
            lambda: len(ceph_json("quorum_status", timeout=10).get("quorum_names", [])) == len(MONS),
            BOOT_DEADLINE,
            0.3,
        )
    marker = paths.CEPH / "config-db.done"

    def config_db() -> None:
        # the marker holds the text it applied: a lab made before a change to CONFIG_DB takes it on its next `up`
        if marker.exists() and marker.read_text() == CONFIG_DB:
            return
        src = paths.CEPH / "config-db.conf"
        _write(src, CONFIG_DB)
        ceph("config", "assimilate-conf", "-i", str(src))
        _write(marker, CONFIG_DB)

    def osd(i: int) -> Callable[[], None]:
        def make_and_start() -> None:
            _create_osd(i)
            _start(f"ceph-osd.{i}", ["ceph-osd", "-f", "--conf", conf, "-i", str(i)])

        return make_and_start

    with step("config db; ceph osd new + ceph-osd --mkfs x3; start", log):
        _parallel([config_db, *(osd(i) for i in OSDS)])
    with step("HEALTH_OK, all PGs active+clean", log):
        s = wait_healthy()
    with step(f"client.{PROGRAM_ID}: the lab stack's Ceph identity (docs/permissions.md)", log):
        program_identity()
    log(f"  ceph: {s['health']['status']}, {s['pgmap']['num_pgs']} PGs active+clean, {time.monotonic() - t0:.1f}s")
    return info()


# The lab stack's Ceph identity (lab/stack.yaml ceph.admin.clientId): the documented caps for its
# pool and client, its keyring where the admin node's ceph.conf looks ([client] keyring).
PROGRAM_ID = "pulumi"


def program_identity() -> None:
    """`ceph auth get-or-create` with the caps components/ceph_rights.py documents for the lab
    stack's names (the caps set again when the entity exists), its keyring written."""
    from components import ceph_rights

    caps = ceph_rights.program_caps("rbd-pool", "proxmox", scrub_window=True)
    keyring = paths.CEPH / f"ceph.client.{PROGRAM_ID}.keyring"
    try:
        ceph("auth", "get", f"client.{PROGRAM_ID}")
    except LabError:
        pass
    else:
        ceph("auth", "caps", f"client.{PROGRAM_ID}", "mon", caps["mon"], "osd", caps["osd"])
    _write(keyring, ceph("auth", "get-or-create", f"client.{PROGRAM_ID}", "mon", caps["mon"], "osd", caps["osd"]), 0o600)


def info() -> dict[str, Any]:
    return {
        "fsid": fsid(),
        "monitors": list(MONS.values()),
        "mon_host": mon_host(),
        "mon_names": dict(MONS),
        "conf": str(paths.CEPH_CONF),
        "admin_keyring": str(paths.CEPH_ADMIN_KEYRING),
        "admin_user": "admin",
        "program_id": PROGRAM_ID,
        "admin_host": ADMIN_HOST,
        "public_network": PUBLIC_NETWORK,
        "cluster_network": CLUSTER_NETWORK,
        "daemons": daemon_names(),
    }


def down(deadline: float = 10.0) -> None:
    """Stop the OSDs, then the manager and the monitors (an OSD whose monitors are gone
    waits osd_mon_shutdown_timeout, 5s, before it exits)."""
    names = daemon_names()
    osds = [n for n in names if n.startswith("ceph-osd.")]
    for group in (osds, [n for n in names if n not in osds]):
        kill_all([p for n in group if (p := running(n)) is not None], deadline)
        for n in group:
            stop(n, deadline)


def health() -> dict[str, Any]:
    """A summary of `ceph status`, or why it could not be had."""
    if not paths.CEPH_CONF.exists():
        return {"reachable": False, "error": "no cluster (lab is down)"}
    try:
        s = ceph_json("status", timeout=5)
    except (LabError, ValueError) as e:
        return {"reachable": False, "error": str(e)}
    osd = s.get("osdmap", {})
    osd = osd.get("osdmap", osd)
    pg = s.get("pgmap", {})
    return {
        "reachable": True,
        "fsid": s.get("fsid"),
        "health": s.get("health", {}).get("status"),
        "checks": sorted(s.get("health", {}).get("checks", {})),
        "quorum": s.get("quorum_names", []),
        "mgr_available": s.get("mgrmap", {}).get("available"),
        "osds": {k: osd.get(k) for k in ("num_osds", "num_up_osds", "num_in_osds")},
        "pools": pg.get("num_pools"),
        "pgs": {x["state_name"]: x["count"] for x in pg.get("pgs_by_state", [])},
    }
