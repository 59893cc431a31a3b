"""Runbook 1-1 on the Ceph admin node: HEALTH_OK, every OSD up and in, the mon quorum complete,
and room for the pool's placement groups. Run as ``python3 - POOL PG_NUM SIZE`` with this file on
stdin. Prints the runbook's check points; exits 1 with every problem found.

This file is sent to the admin node: it uses the standard library and librados only. It asks the
monitors what `ceph status`, `ceph health detail`, `ceph osd pool ls detail` and `ceph config get`
ask (the same monitor commands, through python3-rados, the library the `ceph` CLI is built on and
ceph-common depends on) over one session: one Python start-up instead of one per `ceph` CLI call
(~0.2 s of CPU each; issue #22).
"""

import json
import sys

import rados

CLUSTER = None


def ask(words, command):
    """The monitors' answer to COMMAND (the `ceph WORDS` CLI call), or exit 1 naming it as the CLI would fail."""
    global CLUSTER
    if CLUSTER is None:
        # "": the default search, $CEPH_CONF first; client.admin unless `--id ID` ends the arguments: as the CLI
        CLUSTER = rados.Rados(conffile="", name=f"client.{ID}" if ID else None)
        CLUSTER.connect()
    ret, out, err = CLUSTER.mon_command(json.dumps(command), b"")
    if ret != 0:
        print(f"ceph health gate: `ceph {words}` failed (exit {-ret}): {err.strip()[-300:]}")
        sys.exit(1)
    return out.decode("utf-8", "replace")


def ceph(*args):
    """`ceph ARGS -f json`, answered as JSON."""
    prefix = " ".join(a for a in args if a != "detail")
    command = {"prefix": prefix, "format": "json", **({"detail": "detail"} if "detail" in args else {})}
    return json.loads(ask(" ".join(args), command) or "null")


# Warnings about this stack's own pool that `pulumi up` itself repairs: someone disabled the
# pool's rbd application (drift the pool resource puts back with `rbd pool init`). Refusing to
# run would leave the drift unrepairable; a warning about any other pool still stops the run.
OWN_POOL_REPAIRS = ("POOL_APP_NOT_ENABLED",)


def only_about(check, pool):
    """The check's detail names pools, and only this one (`application not enabled on pool 'X'`)."""
    detail = ceph("health", "detail").get("checks", {}).get(check, {}).get("detail", [])
    named = [d["message"] for d in detail if " pool '" in d.get("message", "")]
    return bool(named) and all(f" pool '{pool}'" in message for message in named)


ARGS, ID = (sys.argv[:-2], sys.argv[-1]) if sys.argv[-2:-1] == ["--id"] else (sys.argv, None)


def main():
    pool, pg_num, size = ARGS[1], int(ARGS[2]), int(ARGS[3])
    problems = []
    status = ceph("status")
    health = status["health"]["status"]
    if health != "HEALTH_OK":
        checks = status["health"].get("checks", {})
        repaired = {name for name in checks if name in OWN_POOL_REPAIRS and only_about(name, pool)}
        why = "; ".join(f"{name}: {c['summary']['message']}" for name, c in sorted(checks.items()) if name not in repaired)
        if repaired and not why:
            health = f"{health} ({', '.join(sorted(repaired))} on pool {pool}: this stack's own pool, which this run repairs)"
        else:
            problems.append(f"health is {health}, not HEALTH_OK ({why or 'see ceph health detail'})")
    osdmap = status["osdmap"].get("osdmap", status["osdmap"])
    total, up, in_ = osdmap["num_osds"], osdmap["num_up_osds"], osdmap["num_in_osds"]
    if total == 0 or up != total or in_ != total:
        problems.append(f"osd: {total} osds: {up} up, {in_} in (every OSD must be up and in)")
    mons = status["monmap"]["num_mons"]
    quorum = status.get("quorum_names", [])
    if len(quorum) != mons:
        problems.append(f"mon: {mons} daemons, quorum {','.join(quorum)} (every monitor must be in quorum)")

    max_per_osd = int(ask("config get mon mon_max_pg_per_osd", {"prefix": "config get", "who": "mon", "key": "mon_max_pg_per_osd"}).strip() or 250)
    others = sum(p["pg_num"] * p["size"] for p in ceph("osd", "pool", "ls", "detail") if p["pool_name"] != pool)
    wanted = pg_num * size
    budget = max_per_osd * max(in_, 1)
    if others + wanted > budget:
        problems.append(
            f"pool {pool}: pg_num {pg_num} x size {size} = {wanted} PG replicas (+{others} in other pools) would exceed "
            f"mon_max_pg_per_osd {max_per_osd} x {in_} OSDs in = {budget}; lower ceph.pool.pgNum (at most "
            f"{max(((budget - others) // size), 0)}, as a power of two) or add OSDs"
        )

    print(f"health: {health}")
    print(f"mon: {mons} daemons, quorum {','.join(quorum)}")
    print(f"osd: {total} osds: {up} up, {in_} in")
    if problems:
        for problem in problems:
            print(f"ceph health gate: {problem}")
        print("ceph health gate: refusing to touch Ceph; fix the cluster (ceph health detail) and run pulumi up again")
        sys.exit(1)
    print(f"ceph health gate: passed; room for pool {pool} ({wanted} of {budget - others} PG replicas)")


main()
