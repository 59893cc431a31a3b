"""python -m lab up | down | status [--json] | fault NODE poweroff|isolate|restore
| ssh-fault ROLE ACTION PATTERN [--times N] [--seconds S] | ssh-fault --clear [ROLE] | ssh-fault --list
| calls [--last SECONDS] [--agent UA] [--not-pve]"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import lab
import lab.sshd


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


def _print_rule(r: dict) -> None:
    secs = f" {r['seconds']:g}s" if r["seconds"] is not None else ""
    print(f"  {r['role']:<11} {r['action'] + secs:<16} {r['remaining']} left  {r['pattern']}")


def _ssh_fault(a: argparse.Namespace) -> None:
    if a.list:
        rules = [r for role in lab.sshd.HOSTS for r in lab.sshd.faults(role)]
        print("ssh faults:" if rules else "ssh faults: none")
        for r in rules:
            _print_rule(r)
    elif a.clear:
        lab.sshd.clear_faults(a.role)
        print(f"ssh faults cleared: {a.role or 'every role'}")
    else:
        r = lab.sshd.inject_fault(a.role, a.action, a.pattern, times=a.times, seconds=a.seconds)
        print("ssh fault added:")
        _print_rule(r)


def _calls(a: argparse.Namespace) -> None:
    """The PVE API calls the lab served (lab/pve/calllog.py), one readable line each."""
    import lab.pve

    since = time.time() - a.last if a.last is not None else None
    calls = lab.pve.calls(since, agent=a.agent)
    if a.not_pve:
        calls = [c for c in calls if c.get("kind") in lab.pve.calllog.NOT_PVE]
    for c in calls:
        print(time.strftime("%H:%M:%S", time.localtime(c["t"])), c.get("node") or "-", lab.pve.calllog.line(c))


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
    sf = sub.add_parser(
        "ssh-fault",
        help="make a node's SSH misbehave for matching commands",
        description="ROLE ACTION PATTERN: the next N commands on ROLE's sshd matching the bash glob PATTERN "
        f"(the whole command, e.g. 'ceph osd pool create *') misbehave; ACTION: {', '.join(lab.sshd.FAULT_KINDS)}. "
        "--clear [ROLE] removes the rules (of every role without ROLE), --list shows them.",
    )
    sf.add_argument("role", nargs="?", help=f"one of {', '.join(lab.sshd.HOSTS)}")
    sf.add_argument("action", nargs="?", help=" | ".join(lab.sshd.FAULT_KINDS))
    sf.add_argument("pattern", nargs="?", help="bash glob matched against the whole command")
    sf.add_argument("--times", type=int, default=1, help="how many matching commands (default 1)")
    sf.add_argument("--seconds", type=float, help="slow: seconds before the command runs")
    sf_mode = sf.add_mutually_exclusive_group()
    sf_mode.add_argument("--clear", action="store_true", help="remove the rules of ROLE, or of every role")
    sf_mode.add_argument("--list", action="store_true", help="the rules of every role, with what remains")
    ca = sub.add_parser("calls", help="the PVE API calls the lab served (.lab/pve/calls.log), oldest first")
    ca.add_argument("--last", type=float, metavar="SECONDS", help="only the calls of the last SECONDS")
    ca.add_argument("--agent", metavar="UA", help="only calls whose User-Agent contains UA (the plugin: Go-http-client)")
    ca.add_argument("--not-pve", action="store_true", help="only answers that were not PVE's: unmodelled, lab-fault")
    a = p.parse_args(argv)
    if a.cmd == "ssh-fault":
        if a.list and (a.role or a.action or a.pattern):
            sf.error("--list takes no ROLE, ACTION or PATTERN")
        if a.clear and (a.action or a.pattern):
            sf.error("--clear takes at most a ROLE")
        if not (a.list or a.clear) and not a.pattern:
            sf.error("give ROLE ACTION PATTERN, --clear [ROLE] or --list")
    try:
        if a.cmd == "up":
            lab.up()
        elif a.cmd == "down":
            lab.down()
        elif a.cmd == "status":
            s = lab.status()
            print(json.dumps(s, indent=2)) if a.json else _print_status(s)
        elif a.cmd == "ssh-fault":
            _ssh_fault(a)
        elif a.cmd == "calls":
            _calls(a)
        else:
            lab.fault(a.node, a.action)
    except lab.LabError as e:
        print(f"lab {a.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
