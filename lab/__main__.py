"""python -m lab up | down | status [--json] | fault NODE poweroff|isolate|restore
| ssh-fault ROLE ACTION PATTERN [--times N] [--seconds S] | ssh-fault --clear [ROLE] | ssh-fault --list
| calls [--last SECONDS] [--agent UA] [--not-pve]
| node-net NODE [--mtu IF=N] [--master IF=BRIDGE] | node-net NODE --reset | node-net --all --reset | node-net [--all]"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import lab
import lab.sshd
from lab import stack_config


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


def _pair(text: str, what: str) -> tuple[str, str]:
    ifname, sep, value = text.partition("=")
    if not sep or not ifname:
        raise lab.LabError(f"--{what} {text!r}: give IF={'N' if what == 'mtu' else 'BRIDGE'}, e.g. lo={'1500' if what == 'mtu' else 'vmbr0'}")
    return ifname, value


def _node_net(a: argparse.Namespace) -> None:
    """Set, reset or show the PVE nodes' network overrides (lab/node_network.py)."""
    from lab import node_network

    nodes = list(node_network.NODES) if a.all or not a.node else [a.node]
    if a.reset:
        lab.reset_node_net(None if a.all else a.node)
        print(f"node-net reset: {'every node' if a.all else a.node}")
        return
    for ifname, value in (_pair(x, "mtu") for x in a.mtu or []):
        try:
            mtu = int(value)
        except ValueError:
            raise lab.LabError(f"--mtu {ifname}={value}: the mtu must be an integer") from None
        lab.set_node_link(a.node, ifname, mtu=mtu)
    for ifname, bridge in (_pair(x, "master") for x in a.master or []):
        lab.set_node_link(a.node, ifname, master=bridge)
    for node in nodes:
        links = lab.node_net(node)
        print(
            f"{node}: "
            + (
                ", ".join(f"{i} " + " ".join(f"{k} {v if v is not None else '(none)'}" for k, v in sorted(o.items())) for i, o in sorted(links.items()))
                or "the host's values"
            )
        )


OPERATOR_COMMANDS = """\
what an operator breaks and puts back (each shows on the node as a real PVE node would):
  python -m lab fault pve-node2 poweroff            a node off (restore: power on, every unit runs again)
  python -m lab node-net pve-node1 --mtu lo=1500 --master lo=vmbr0
                                                     `ip -j link` on pve-node1 shows lo with mtu 1500 in vmbr0
  python -m lab node-net pve-node1 --reset           (--all --reset: every node) the host's values again
  ssh -p 2222 -i .lab/ssh/id_ed25519 root@127.10.20.12 systemctl stop pve-ha-lrm
                                                     on pve-node2: the unit stops: its services freeze, ha-manager status
                                                     shows the LRM in restart mode, then dead (start: back)
  ceph config rm global cluster_network              (on the admin node, 127.10.10.101) Ceph's networks (public 127.10.10.0/24, cluster
                                                     127.10.30.0/24, in the mon config db) broken for checks
  python -m lab ssh-fault ROLE ACTION PATTERN        a node's SSH drops, stalls or answers garbage
`python -m lab up` clears the network overrides and starts every stopped unit again; `down` removes all.
"""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lab",
        description=lab.__doc__.splitlines()[0],
        epilog=OPERATOR_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help="bring the lab up (idempotent) and write .lab/lab.json")
    sub.add_parser("down", help="stop every lab process and remove .lab/")
    sub.add_parser("stack-config", help="write Pulumi.lab.yaml (git ignores it) from lab/stack.yaml; make demo does")
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
    nn = sub.add_parser(
        "node-net",
        help="what `ip -j link|addr` shows on a PVE node for an interface (mtu, bridge)",
        description="Per-interface overrides of `ip -j link` / `ip -j addr` on a lab PVE node, which otherwise "
        "shows the host's own interfaces (the nodes share the host's loopback): --mtu lo=1500, --master lo=vmbr0 "
        "(--master lo= for none). Kept in .lab/nodes/NODE/network.json; `lab up`/`down` clear them. "
        "Without --mtu/--master/--reset it shows the overrides.",
    )
    nn.add_argument("node", nargs="?", help="pve-node1 | pve-node2 | pve-node3")
    nn.add_argument("--mtu", action="append", metavar="IF=N", help="the mtu IF shows (repeatable)")
    nn.add_argument("--master", action="append", metavar="IF=BRIDGE", help="the bridge IF is a port of; IF= for none (repeatable)")
    nn.add_argument("--reset", action="store_true", help="remove NODE's overrides (with --all: every node's)")
    nn.add_argument("--all", action="store_true", help="every node (with --reset, or to show them all)")
    a = p.parse_args(argv)
    if a.cmd == "node-net":
        if a.all and (a.mtu or a.master):
            nn.error("--mtu/--master take one NODE, not --all")
        if not a.all and not a.node:
            nn.error("give NODE, or --all")
        if a.reset and (a.mtu or a.master):
            nn.error("--reset takes no --mtu/--master")
        if a.all and a.node:
            nn.error("give NODE or --all, not both")
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
        elif a.cmd == "stack-config":
            print(f"lab stack config: {stack_config.write().name} from lab/stack.yaml")
        elif a.cmd == "status":
            s = lab.status()
            print(json.dumps(s, indent=2)) if a.json else _print_status(s)
        elif a.cmd == "ssh-fault":
            _ssh_fault(a)
        elif a.cmd == "calls":
            _calls(a)
        elif a.cmd == "node-net":
            _node_net(a)
        else:
            lab.fault(a.node, a.action)
    except lab.LabError as e:
        print(f"lab {a.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
