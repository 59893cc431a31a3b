"""python -m lab up | down | status [--json] | fault NODE poweroff|isolate|restore"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import lab


def _print_status(s: dict) -> None:
    c = s["ceph"]
    if c.get("reachable"):
        pgs = ", ".join(f"{n} {k}" for k, n in c["pgs"].items()) or "none"
        print(
            f"ceph: {c['health']} {c['checks'] or ''} quorum {','.join(c['quorum'])}; "
            f"osds {c['osds']['num_up_osds']}/{c['osds']['num_osds']} up; "
            f"{c['pools']} pools; pgs: {pgs}"
        )
    else:
        print(f"ceph: unreachable ({c['error']})")
    print("daemons:" if s["daemons"] else "daemons: none")
    for name, d in s["daemons"].items():
        print(f"  {name:<24} {'alive pid ' + str(d['pid']) if d['alive'] else 'DEAD'}")
    print("listeners:" if s["listeners"] else "listeners: none")
    for ln in s["listeners"]:
        print(f"  {ln['address']}:{ln['port']:<6} {ln['process']}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab", description=lab.__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="bring the lab up (idempotent) and write .lab/lab.json")
    sub.add_parser("down", help="stop every lab process and remove .lab/")
    st = sub.add_parser("status", help="Ceph health, daemons, listeners")
    st.add_argument("--json", action="store_true")
    f = sub.add_parser("fault", help="inject a fault into a PVE node")
    f.add_argument("node")
    f.add_argument("action", choices=lab.FAULT_ACTIONS)
    a = p.parse_args(argv)
    try:
        if a.cmd == "up":
            lab.up()
        elif a.cmd == "down":
            lab.down()
        elif a.cmd == "status":
            s = lab.status()
            print(json.dumps(s, indent=2)) if a.json else _print_status(s)
        else:
            lab.fault(a.node, a.action)
    except lab.LabError as e:
        print(f"lab {a.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
