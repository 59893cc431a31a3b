"""Read-only monitor commands on the Ceph admin node, asked in one go (issue #22).

Run as ``python3 - ceph-mon-reads COMMAND... [--id ID]`` with this file on stdin, each COMMAND a monitor
command as JSON (clients.ceph_cli.mon_command builds them from the `ceph` CLI words they stand
for). It connects as the `ceph` CLI does (``$CEPH_CONF`` or /etc/ceph/ceph.conf, client.admin or client.ID)
through librados, which the CLI itself is built on (ceph-common depends on python3-rados), and
prints one JSON list: for each command what the monitors answered, ``ret`` (0 or -errno), ``out``
(what the CLI prints on stdout) and ``err`` (its status line). One Python start-up and one
monitor session instead of a `ceph` CLI start-up (~0.2 s of CPU) per question.

This file is sent to the admin node: it uses the standard library and librados only.
"""

import json
import sys

import rados


def main():
    args, name = (sys.argv[2:-2], f"client.{sys.argv[-1]}") if sys.argv[-2:-1] == ["--id"] else (sys.argv[2:], None)
    answers = []
    # "": the default search, $CEPH_CONF first; client.admin unless `--id ID` ends the arguments: as the CLI
    with rados.Rados(conffile="", name=name) as cluster:
        for command in args:
            ret, out, err = cluster.mon_command(command, b"")
            answers.append({"ret": ret, "out": out.decode("utf-8", "replace"), "err": err})
    json.dump(answers, sys.stdout)


main()
