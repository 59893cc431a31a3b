"""The lab's Ceph RADOS Gateway: an S3 endpoint on the lab's real Ceph, for Pulumi's state.

Debian's `radosgw` (16.2.15, the lab's Ceph release) on the admin host, as Ceph's manual
deployment guide starts one: a cephx key for `client.rgw.lab` (`mon 'allow rw' osd 'allow rwx'`),
the beast frontend on RGW_ENDPOINT, the default zone. Then `radosgw-admin user create` makes the
state's S3 user and keys, and a bucket is made through the S3 API.

Its pools are made first, each with one PG and the autoscaler off (`rgw` application enabled),
so that the gateway takes little of the three OSDs' PG budget (mon_max_pg_per_osd 250 x 3):
left to itself it would make each pool with osd_pool_default_pg_num (32) and the health gate's
budget for the stacks' pools would shrink by about 600 PG replicas.

The backend URL has the form Pulumi's self-managed S3 backend documents
(`s3://<bucket>?endpoint=<host:port>&disableSSL=true&s3ForcePathStyle=true`, here with the
`region` the AWS SDK asks for and without its checksum warning); the keys are the AWS SDK's environment variables
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import LabError, paths, running, say, spawn, step, stop, wait_for

HOST = "127.10.10.101"  # the Ceph admin host
PORT = 7480  # radosgw's default
ENDPOINT = f"{HOST}:{PORT}"
NAME = "radosgw.lab"  # the pid file's name
ENTITY = "client.rgw.lab"
USER = "pulumi"
BUCKET = "pulumi-state"
REGION = "us-east-1"  # RGW's default zonegroup answers to any region; the AWS SDK wants one
POOLS = (
    ".rgw.root",
    "default.rgw.control",
    "default.rgw.meta",
    "default.rgw.log",
    "default.rgw.buckets.index",
    "default.rgw.buckets.data",
    "default.rgw.buckets.non-ec",
)


def state_dir() -> Path:
    return paths.STATE / "rgw"


def keys_file() -> Path:
    return state_dir() / "keys.json"


def backend_url(bucket: str = BUCKET) -> str:
    """The whole backend URL, ready for `pulumi login`. `response_checksum_validation=when_required`:
    the AWS SDK (v2, under gocloud.dev's s3blob) validates response checksums RGW 16 does not send
    and printed `WARN Response has no supported checksum` on every command."""
    return f"s3://{bucket}?endpoint={ENDPOINT}&disableSSL=true&s3ForcePathStyle=true&region={REGION}&response_checksum_validation=when_required"


def argv() -> list[str]:
    d = state_dir()
    return [
        "radosgw",
        "-f",
        "--conf",
        str(paths.CEPH_CONF),
        "--name",
        ENTITY,
        "--keyring",
        str(d / "keyring"),
        "--rgw-data",
        str(d / "data"),
        "--rgw-frontends",
        f"beast endpoint={ENDPOINT}",
        "--log-file",
        str(paths.CEPH_LOG / "radosgw.log"),
    ]


def answering() -> bool:
    try:
        socket.create_connection((HOST, PORT), timeout=1).close()
    except OSError:
        return False
    return True


def start(deadline: float = 60) -> None:
    """Start the gateway (its key and pools exist: up() made them) and wait until it answers."""
    if running(NAME) is None:
        spawn(NAME, argv())
    wait_for(f"radosgw answering on {ENDPOINT}", answering, deadline, 0.2)


def halt(deadline: float = 10) -> None:
    """Stop the gateway (a test's outage; start() brings it back)."""
    stop(NAME, deadline)


def _pools(ceph: Callable[..., str]) -> None:
    have = set(ceph("osd", "pool", "ls").split())
    for pool in POOLS:
        if pool in have:
            continue
        ceph("osd", "pool", "create", pool, "1", "1", "replicated", "--autoscale-mode=off")
        ceph("osd", "pool", "application", "enable", pool, "rgw")


def _user(admin: Callable[..., str]) -> dict[str, str]:
    """The state user's keys: kept in keys_file(), the user made again with them when Ceph lost it
    (the lab's OSDs keep their data in memory)."""
    if keys_file().exists():
        keys = dict(json.loads(keys_file().read_text()))
    else:
        keys = {"access_key": secrets.token_hex(10).upper(), "secret_key": secrets.token_urlsafe(30)}
        keys_file().write_text(json.dumps(keys))
        keys_file().chmod(0o600)
    try:
        admin("user", "info", "--uid", USER)
    except LabError:
        admin("user", "create", "--uid", USER, "--display-name", "Pulumi state", "--access-key", keys["access_key"], "--secret-key", keys["secret_key"])
    return keys


def s3(keys: dict[str, str]) -> Any:
    """A boto3 S3 client on the gateway with KEYS."""
    import boto3  # lab-only dependency (lab/pyproject.toml)
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=f"http://{ENDPOINT}",
        aws_access_key_id=keys["access_key"],
        aws_secret_access_key=keys["secret_key"],
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def up(log: Callable[[str], None] = say) -> dict[str, Any]:
    """The gateway, its state user and bucket (reusing what exists); the lab.json `rgw` entry."""
    from lab import ceph

    t0 = time.monotonic()
    d = state_dir()
    (d / "data").mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    with step("radosgw: key, pools (1 PG each), start", log):
        if not (d / "keyring").exists():
            ceph.ceph("auth", "get-or-create", ENTITY, "mon", "allow rw", "osd", "allow rwx", "-o", str(d / "keyring"))
        _pools(ceph.ceph)
        start()

    def admin(*args: str) -> str:
        return ceph.run(["radosgw-admin", "--conf", str(paths.CEPH_CONF), *args], timeout=60)

    with step("radosgw: state user and bucket", log):
        keys = _user(admin)
        client = s3(keys)
        if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            wait_for(f"bucket {BUCKET} made", lambda: client.create_bucket(Bucket=BUCKET) or True, 30, 1)
    log(f"  rgw: {ENDPOINT}, bucket {BUCKET}, {time.monotonic() - t0:.1f}s")
    return {
        "url": backend_url(),
        "endpoint": f"http://{ENDPOINT}",
        "bucket": BUCKET,
        "region": REGION,
        "access_key": keys["access_key"],
        "secret_key": keys["secret_key"],
        "keys_file": str(keys_file()),
    }


def down(deadline: float = 10) -> None:
    halt(deadline)
