"""The Ceph side of lab.testing.stack.forget, run on the Ceph admin node (python3 -c, as root):
one SSH round trip and one Python start there, through librados mon commands as the program's own
scripts ask. Each `ceph` command over SSH cost about 0.45 s, and a test's setup and teardown ran up
to seven. Removes the scrub window's owner key when the stack of OWNER_TAG set it, the client (its
key printed first, for the secrets audit's ledger) and the pool.

Arguments: CLIENT POOL OWNER_KEY OWNER_TAG
"""

import json
import os
import sys

import rados  # type: ignore[import-not-found]  # the admin node's python3-rados


def main(client: str, pool: str, owner_key: str, owner_tag: str) -> None:
    with rados.Rados(conffile=os.environ["CEPH_CONF"]) as cluster:

        def mon(**command: object) -> tuple[int, bytes]:
            ret, out, _err = cluster.mon_command(json.dumps(command), b"")
            return ret, out

        ret, out = mon(prefix="config-key get", key=owner_key)
        if ret == 0 and out.decode().strip() == owner_tag:
            mon(prefix="config-key rm", key=owner_key)
        ret, out = mon(prefix="auth get", entity=f"client.{client}", format="json")
        if ret == 0:
            print(json.loads(out)[0]["key"])
            if mon(prefix="auth del", entity=f"client.{client}")[0] != 0:
                raise SystemExit(f"auth del client.{client} failed")
        if pool in cluster.list_pools():
            ret, _out = mon(prefix="osd pool delete", pool=pool, pool2=pool, yes_i_really_really_mean_it=True)
            if ret != 0:
                raise SystemExit(f"osd pool delete {pool} failed: {ret}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
