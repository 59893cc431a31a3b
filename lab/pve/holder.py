#!/usr/bin/python3
"""Hold a VM's RBD disks open like a running QEMU does: the lab's stand-in for a VM process.

Run by the lab's PVE API with Debian's /usr/bin/python3 (python3-rbd, python3-rados); never
imported by the product. The disks come on stdin as JSON:

    {"vmid": 101, "deadline": 90,
     "disks": [{"mon_host": "...", "user": "proxmox", "keyring": "/path", "pool": "rbd-pool",
                "image": "vm-101-disk-0"}]}

For each disk it connects as the storage's client, opens the image and takes its exclusive
lock (`lock_acquire(RBD_LOCK_MODE_EXCLUSIVE)`). A lock still held by a dead client is broken
by librbd, which blocklists that client first: that needs the `osd blocklist` mon capability
(`profile rbd` has it, `allow r` does not), exactly as on a real cluster. While the previous
owner's watch has not timed out yet, librbd calls the owner alive and refuses: the holder
retries until `deadline` seconds have passed.

It reports on stdout, one JSON object a line: {"event": "locked"} once every disk is locked,
{"event": "error", "message": ...} and exit 1 when it gives up, {"event": "lost", ...} and
exit 2 when it loses a lock later (it was blocklisted: the VM would crash). SIGTERM releases
the locks and exits 0 (a clean shutdown); SIGKILL leaves them behind (a node failure).
The key itself is never printed.
"""

import contextlib
import errno
import json
import os
import signal
import sys
import time

import rados
import rbd

RETRY_SECONDS = 1.0
CHECK_SECONDS = 2.0
# librbd's answers while the previous owner still looks alive: try again later.
RETRY_ERRNOS = {errno.EROFS, errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.EEXIST}
CONNECT_TIMEOUT = 10

_stop = False


def say(event, **fields):
    fields["event"] = event
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _on_term(_signo, _frame):
    global _stop
    _stop = True


def _errno(exc):
    return getattr(exc, "errno", None) or 0


def _describe(exc):
    code = _errno(exc)
    text = os.strerror(code) if code else str(exc)
    return f"({code}) {text}" if code else text


def connect(disk):
    conf = {
        "mon_host": disk["mon_host"],
        "keyring": disk["keyring"],
        "client_mount_timeout": str(CONNECT_TIMEOUT),
        "rados_mon_op_timeout": str(CONNECT_TIMEOUT),
        "rados_osd_op_timeout": str(CONNECT_TIMEOUT),
        "log_to_stderr": "false",
        "err_to_stderr": "false",
    }
    cluster = rados.Rados(rados_id=disk["user"], conffile=None, conf=conf)
    cluster.connect(timeout=CONNECT_TIMEOUT)
    return cluster


def owner_alive(image):
    """True while the lock's owner still watches the image (librbd's test before breaking a
    lock: a dead client's watch lingers until the OSDs time it out)."""
    try:
        owners = {str(o.get("owner")) for o in image.lock_get_owners() if o.get("owner")}
        if not owners:
            return False
        return any(str(w.get("addr")) in owners for w in image.watchers_list())
    except (rados.Error, rbd.Error):
        return False


def trace(message):
    """A line in the holders' log (stderr): what the VM process waited for."""
    sys.stderr.write("{} holder[{}] {}\n".format(time.strftime("%H:%M:%S"), os.getpid(), message))
    sys.stderr.flush()


def acquire(image, name, deadline):
    """Take the exclusive lock. While the previous owner looks alive librbd would only ask it
    to hand the lock over (and wait for its answer): wait until its watch is gone, then
    lock_acquire breaks the lock (blocklisting the owner) as QEMU's librbd does."""
    waited = False
    while True:
        if owner_alive(image) and time.monotonic() < deadline and not _stop:
            if not waited:
                trace(f"{name}: the lock owner still watches the image; waiting for its watch to expire")
                waited = True
            time.sleep(RETRY_SECONDS)
            continue
        started = time.monotonic()
        try:
            image.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)
            trace(f"{name}: exclusive lock acquired ({time.monotonic() - started:.1f}s)")
            return
        except rbd.Error as exc:
            trace(f"{name}: lock_acquire failed after {time.monotonic() - started:.1f}s: {_describe(exc)}")
            if _errno(exc) not in RETRY_ERRNOS or time.monotonic() >= deadline or _stop:
                raise
        time.sleep(RETRY_SECONDS)


def main():
    spec = json.load(sys.stdin)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    deadline = time.monotonic() + float(spec.get("deadline", 90))
    held = []  # (cluster, ioctx, image, label)
    clusters = {}
    try:
        for disk in spec["disks"]:
            label = "{}/{}".format(disk["pool"], disk["image"])
            key = (disk["mon_host"], disk["user"], disk["keyring"])
            step = "connect as client.{}".format(disk["user"])
            try:
                if key not in clusters:
                    clusters[key] = connect(disk)
                step = f"open {label}"
                ioctx = clusters[key].open_ioctx(disk["pool"])
                image = rbd.Image(ioctx, disk["image"])
                held.append((ioctx, image, label))
                step = f"acquire exclusive lock on {label}"
                acquire(image, label, deadline)
            except (rados.Error, rbd.Error) as exc:
                message = f"{step} failed: {_describe(exc)}"
                if step.startswith("acquire") and _errno(exc) in (errno.EACCES, errno.EPERM):
                    message += (
                        " (librbd must blocklist the lock's dead owner to break it: client.{} lacks"
                        " the 'osd blocklist' mon capability, which mon 'profile rbd' grants)".format(disk["user"])
                    )
                say("error", step=step, errno=_errno(exc), message=message)
                return 1
        say("locked", images=[h[2] for h in held], pid=os.getpid())
        next_check = time.monotonic() + CHECK_SECONDS
        while not _stop:
            time.sleep(0.1)
            if _stop or time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + CHECK_SECONDS
            for _ioctx, image, label in held:
                try:
                    owner = image.is_exclusive_lock_owner()
                except (rados.Error, rbd.Error) as exc:
                    owner = False
                    why = _describe(exc)
                else:
                    why = "lock taken over by another client"
                if not owner and not _stop:
                    say("lost", image=label, message=f"lost the exclusive lock on {label}: {why}")
                    return 2
        return 0
    finally:
        for _ioctx, image, _label in reversed(held):
            try:
                if _stop:
                    image.lock_release()
            except (rados.Error, rbd.Error):
                pass
            with contextlib.suppress(rados.Error, rbd.Error):
                image.close()
        for _ioctx, _image, _label in held:
            with contextlib.suppress(rados.Error, rbd.Error):
                _ioctx.close()
        for cluster in clusters.values():
            with contextlib.suppress(rados.Error, rbd.Error):
                cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
