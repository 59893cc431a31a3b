"""The real Ceph behind the lab's RBD storages: status checks, images, keyrings.

Everything here acts as the *storage's* client (its `monhost`, `username` and the keyring
PVE keeps at /etc/pve/priv/ceph/<storage>.keyring, here `<state>/pve/priv/ceph/`), never as
the admin: a wrong key or missing capability fails here as it fails on a real node.

- status: PVE's RBDPlugin::status runs the mon command `df` through librados; the lab does
  the same (Debian's python3-rados, in a worker thread, with timeouts), cached for a few
  seconds. A failure gives PVE's wording (`rados_connect failed - Permission denied`).
- images: the `rbd` CLI, invoked as PVE invokes it (`rbd -p <pool> -m <monhost>
  --auth_supported cephx -n client.<user> --keyring <file> create ...`), errors worded as
  PVE words them (`rbd create 'vm-101-disk-0' error: ...`). One image's size (`rbd info`, the
  question PVE asks on every VM read) is asked through librbd first, on a connection of its own
  as the same client; when that fails, the CLI runs and fails with PVE's words.

Keys never reach a command line, a log or an error message: only the keyring's path does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOG = logging.getLogger("lab.pve.rbd")

DIST_PACKAGES = "/usr/lib/python3/dist-packages"
RBD = "/usr/bin/rbd"
# Seconds: librados connect and mon/osd operation timeouts, and the whole CLI call.
CONNECT_TIMEOUT = 5
CLI_TIMEOUT = 30
STATUS_TTL = 5.0

_ERRNO_TEXT = {
    1: "Operation not permitted",
    2: "No such file or directory",
    13: "Permission denied",
    22: "Invalid argument",
    95: "Operation not supported",
    108: "Cannot send after transport endpoint shutdown",
    110: "Connection timed out",
}


class RbdError(Exception):
    """A failed Ceph operation, worded as PVE words it; ``exit_code``: the rbd command's, when it
    ran; ``enoent``: rbd said the image is not there."""

    def __init__(self, message: str, exit_code: int | None = None, enoent: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.enoent = enoent


def clean_env() -> dict[str, str]:
    """The environment for Ceph tools: no CEPH_ARGS / CEPH_CONF from whoever started us."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CEPH_")}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C"
    return env


BASE_SNAP = "__base__"  # the snapshot of a template's base image linked clones are made from (RBDPlugin)


def volume_name(entry: dict[str, Any]) -> str:
    r"""PVE's volume name of an `rbd ls -l` entry: the image's name, or `<base>/<image>` for a linked
    clone of a base image's `__base__` (RBDPlugin list_images: `$parent =~ m/^(base-\d+-\S+)\@__base__$/`)."""
    parent = entry.get("parent") or {}
    if str(parent.get("image", "")).startswith("base-") and parent.get("snapshot") == BASE_SNAP:
        return f"{parent['image']}/{entry['image']}"
    return str(entry["image"])


def monhost_list(monhost: str) -> str:
    """PVE's monhost ("a b;c,d") as a mon_host value ("a,b,c,d")."""
    return ",".join(m for m in re.split(r"[\s,;]+", str(monhost or "")) if m)


def _system_module(name: str) -> Any:
    """Debian's binding NAME (python3-rados, python3-rbd), imported from the system's
    dist-packages, which are on the path only for that import: the other system packages there
    (pyOpenSSL, ...) must not take the place of the venv's, nor add to them."""
    if name not in sys.modules:
        added = DIST_PACKAGES not in sys.path
        if added:
            sys.path.append(DIST_PACKAGES)
        try:
            __import__(name)
        finally:
            if added:
                sys.path.remove(DIST_PACKAGES)
    return sys.modules[name]


def _import_rados():
    return _system_module("rados")


def _import_rbd():
    _import_rados()
    return _system_module("rbd")


def _connect(cli: dict[str, str]) -> Any:
    """A librados connection as the storage's client (CLIENT: mon_host, user, keyring), for one question."""
    rados = _import_rados()
    conf = {
        "mon_host": cli["mon_host"],
        "keyring": cli["keyring"],
        "client_mount_timeout": str(CONNECT_TIMEOUT),
        "rados_mon_op_timeout": str(CONNECT_TIMEOUT),
        "rados_osd_op_timeout": str(CONNECT_TIMEOUT * 2),
        "log_to_stderr": "false",
        "err_to_stderr": "false",
    }
    cluster = rados.Rados(rados_id=cli["user"], conffile=None, conf=conf)
    try:
        cluster.connect(timeout=CONNECT_TIMEOUT)
    except Exception:
        with contextlib.suppress(Exception):
            cluster.shutdown()
        raise
    return cluster


@contextlib.contextmanager
def _pool(cli: dict[str, str]) -> Iterator[Any]:
    """The storage's pool (a librados I/O context) on a connection of its own, shut down after."""
    cluster = _connect(cli)
    try:
        with cluster.open_ioctx(cli["pool"]) as ioctx:
            yield ioctx
    finally:
        with contextlib.suppress(Exception):
            cluster.shutdown()


def _errno_of(exc: BaseException) -> int:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code:
        return abs(code)
    found = re.search(r"\[errno (\d+)\]", str(exc))
    return int(found.group(1)) if found else 0


def _rados_message(exc: BaseException) -> str:
    code = _errno_of(exc)
    if code:
        return _ERRNO_TEXT.get(code) or os.strerror(code)
    return str(exc) or type(exc).__name__


class CephAccess:
    """Per-storage access to the real Ceph cluster."""

    def __init__(self, state_dir: Path, fake: bool = False) -> None:
        self.priv = Path(state_dir) / "priv" / "ceph"
        self.fake = fake
        self._status: dict[str, tuple[float, dict[str, Any]]] = {}
        self._inflight: dict[str, asyncio.Future] = {}

    # ---------------------------------------------------------------- keyrings

    def keyring_path(self, sid: str) -> Path:
        return self.priv / f"{sid}.keyring"

    def write_keyring(self, sid: str, content: str) -> None:
        """PVE::CephConfig::ceph_create_keyfile: the given text, one trailing newline, 0400."""
        self.priv.mkdir(parents=True, exist_ok=True)
        os.chmod(self.priv.parent, 0o700)
        path = self.keyring_path(sid)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(str(content).rstrip("\n") + "\n")
        os.chmod(tmp, 0o400)
        tmp.replace(path)
        self.forget(sid)

    def remove_keyring(self, sid: str) -> None:
        self.keyring_path(sid).unlink(missing_ok=True)
        self.forget(sid)

    def has_keyring(self, sid: str) -> bool:
        return self.keyring_path(sid).is_file()

    def forget(self, sid: str) -> None:
        self._status.pop(sid, None)

    # ------------------------------------------------------------------ client

    def client(self, sid: str, store: dict[str, Any]) -> dict[str, str]:
        """What a node uses to reach the storage: mon_host, user, keyring path, pool."""
        return {
            "mon_host": monhost_list(store.get("monhost", "")),
            "user": str(store.get("username") or "admin"),
            "keyring": str(self.keyring_path(sid)),
            "pool": str(store.get("pool") or "rbd"),
        }

    # ------------------------------------------------------------------ status

    def cached_status(self, sid: str) -> dict[str, Any] | None:
        entry = self._status.get(sid)
        return entry[1] if entry else None

    def stale(self, sid: str) -> bool:
        entry = self._status.get(sid)
        return entry is None or time.monotonic() - entry[0] > STATUS_TTL

    async def status(self, sid: str, store: dict[str, Any], refresh: bool = False) -> dict[str, Any]:
        """{'active': 0|1, 'reason': str|None, 'total', 'used', 'avail'} for the storage."""
        if not refresh and not self.stale(sid):
            return self._status[sid][1]
        running = self._inflight.get(sid)
        if running is not None:
            return await asyncio.shield(running)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[sid] = fut
        try:
            result = await self._check(sid, store)
            self._status[sid] = (time.monotonic(), result)
            fut.set_result(result)
            return result
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        finally:
            self._inflight.pop(sid, None)
            if not fut.done():
                fut.cancel()
            elif fut.exception() is not None:
                fut.exception()  # retrieved: no "never retrieved" warning

    async def _check(self, sid: str, store: dict[str, Any]) -> dict[str, Any]:
        down = {"active": 0, "total": 0, "used": 0, "avail": 0}
        if self.fake:
            return dict(down, reason="rados_connect failed - Connection timed out (the lab runs without Ceph)")
        cli = self.client(sid, store)
        if not cli["mon_host"]:
            return dict(down, reason="rados_connect failed - No such file or directory (no monhost)")
        if not self.has_keyring(sid):
            return dict(down, reason="rados_connect failed - No such file or directory (no keyring for the storage)")
        try:
            df = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, self._df, cli), CONNECT_TIMEOUT * 3)
        except TimeoutError:
            return dict(down, reason="rados_connect failed - Connection timed out")
        except RbdError as exc:
            return dict(down, reason=str(exc))
        pool = store.get("data-pool") or cli["pool"]
        for entry in df.get("pools", []):
            if entry.get("name") == pool:
                stats = entry.get("stats", {})
                used = int(stats.get("bytes_used", stats.get("stored", 0)) or 0)
                avail = int(stats.get("max_avail", 0) or 0)
                return {"active": 1, "reason": None, "total": used + avail, "used": used, "avail": avail}
        return dict(down, reason=f"could not get usage stats for pool '{pool}'")

    @staticmethod
    def _df(cli: dict[str, str]) -> dict[str, Any]:
        """The mon command `df` as the storage's client (runs in a worker thread)."""
        try:
            cluster = _connect(cli)
        except Exception as exc:
            raise RbdError(f"rados_connect failed - {_rados_message(exc)}") from None
        try:
            ret, out, err = cluster.mon_command(json.dumps({"prefix": "df", "format": "json"}), b"", timeout=CONNECT_TIMEOUT)
            if ret != 0:
                raise RbdError(f"mon_command df failed - {err or _ERRNO_TEXT.get(-ret, ret)}")
            return json.loads(out or b"{}")
        finally:
            with contextlib.suppress(Exception):
                cluster.shutdown()

    # ------------------------------------------------------------------ images

    async def rbd(self, sid: str, store: dict[str, Any], args: list[str], errmsg: str) -> str:
        """Run `rbd` as the storage's client; RbdError "<errmsg>: <last stderr line>" on failure."""
        if self.fake:
            raise RbdError(f"{errmsg}: rbd: couldn't connect to the cluster! (the lab runs without Ceph)")
        cli = self.client(sid, store)
        argv = [
            RBD,
            "-c",
            "/dev/null",
            "-p",
            cli["pool"],
            "-m",
            cli["mon_host"],
            "--auth_supported",
            "cephx",
            "-n",
            "client." + cli["user"],
            "--keyring",
            cli["keyring"],
            "--client_mount_timeout",
            str(CONNECT_TIMEOUT),
            "--rados_mon_op_timeout",
            str(CONNECT_TIMEOUT),
            "--rados_osd_op_timeout",
            str(CONNECT_TIMEOUT * 2),
            *args,
        ]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env()
            )
        except OSError as exc:
            raise RbdError(f"{errmsg}: {exc.strerror}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RbdError(f"{errmsg}: got timeout") from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
            # librbd's own log lines ("2025-... -1 librbd::...") are noise; PVE shows the last line.
            useful = [ln for ln in lines if ln.startswith("rbd:")] or lines
            raise RbdError(f"{errmsg}: {useful[-1] if useful else f'exit code {proc.returncode}'}", exit_code=proc.returncode)
        return out.decode(errors="replace")

    async def create_image(self, sid: str, store: dict[str, Any], name: str, size_bytes: int) -> None:
        mib = max(1, (int(size_bytes) + 1024 * 1024 - 1) // (1024 * 1024))
        args = ["create", "--image-format", "2", "--size", str(mib)]
        if store.get("data-pool"):
            args += ["--data-pool", str(store["data-pool"])]
        await self.rbd(sid, store, [*args, name], f"rbd create '{name}' error")

    async def remove_image(self, sid: str, store: dict[str, Any], name: str) -> bool:
        """Remove the image; False if it did not exist. An image with snapshots (a template's base
        image and its `__base__`) is freed as RBDPlugin free_image frees it: every protected
        snapshot unprotected, `rbd snap purge`, then `rbd rm` (tried plain first: most images
        have none, and the end is the same)."""
        try:
            await self.rbd(sid, store, ["rm", "--no-progress", name], f"rbd rm '{name}' error")
        except RbdError as exc:
            if "No such file or directory" in str(exc) or "(2)" in str(exc):
                return False
            if "snapshots" not in str(exc):
                raise
            snaps = json.loads(await self.rbd(sid, store, ["snap", "ls", "--format", "json", name], "rbd error") or "[]")
            for snap in snaps:
                if snap.get("protected") in (True, "true"):
                    await self.rbd(sid, store, ["snap", "unprotect", name, "--snap", snap["name"]], f"rbd unprotect {name} snap '{snap['name']}' error")
            await self.rbd(sid, store, ["snap", "purge", "--no-progress", name], f"rbd snap purge '{name}' error")
            await self.rbd(sid, store, ["rm", "--no-progress", name], f"rbd rm '{name}' error")
        return True

    async def create_base(self, sid: str, store: dict[str, Any], name: str) -> str:
        """A template's disk (RBDPlugin create_base): `rbd rename vm-N-disk-M base-N-disk-M`, the
        snapshot `__base__` made and protected, so linked clones can be made from it. Returns the
        base image's name."""
        base = re.sub(r"^vm-", "base-", name)
        await self.rbd(sid, store, ["rename", name, base], f"rbd rename '{name}' error")
        await self.rbd(sid, store, ["snap", "create", base, "--snap", BASE_SNAP], f"rbd snap create '{base}' error")
        await self.rbd(sid, store, ["snap", "protect", base, "--snap", BASE_SNAP], f"rbd protect {base} snap '{BASE_SNAP}' error")
        return base

    async def clone_image(self, sid: str, store: dict[str, Any], base: str, name: str) -> None:
        """A linked clone (RBDPlugin clone_image): `rbd clone <pool>/<base> --snap __base__ <pool>/<name>`."""
        pool = self.client(sid, store)["pool"]
        args = ["clone", f"{pool}/{base}", "--snap", BASE_SNAP]
        if store.get("data-pool"):
            args += ["--data-pool", str(store["data-pool"])]
        await self.rbd(sid, store, [*args, f"{pool}/{name}"], f"rbd clone '{base}' error")

    async def _in_thread(self, what: str, timeout: float, job: Any, *args: Any) -> Any:
        """JOB(*ARGS) in a worker thread (librbd blocks), bounded by TIMEOUT seconds; any failure
        is an RbdError `<what> failed: <why>`."""
        if self.fake:
            raise RbdError("rbd: couldn't connect to the cluster! (the lab runs without Ceph)")
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, job, *args), timeout)
        except TimeoutError:
            raise RbdError(f"{what} failed: got timeout") from None
        except RbdError:
            raise
        except Exception as exc:
            raise RbdError(f"{what} failed: {_rados_message(exc)}") from None

    async def copy_data(self, sid: str, store: dict[str, Any], source: str, target: str) -> None:
        """A full clone's data (QemuServer.pm clone_disk -> clone_disk_copy_data: `qemu-img convert
        -n` of the source onto the target vdisk_alloc made): every allocated extent of SOURCE (a
        linked clone's read through its parent) written at its offset into TARGET, through librbd
        as the storage's client."""
        await self._in_thread(f"copy '{source}' to '{target}'", CLI_TIMEOUT * 4, self._librbd_copy, self.client(sid, store), source, target)

    @staticmethod
    def _librbd_copy(cli: dict[str, str], source: str, target: str) -> None:
        rbd = _import_rbd()
        with _pool(cli) as ioctx, rbd.Image(ioctx, source, read_only=True) as src, rbd.Image(ioctx, target) as dst:
            if dst.size() < src.size():
                raise RbdError(f"copy '{source}' to '{target}' failed: the target is smaller than the source")

            def extent(offset: int, length: int, exists: bool) -> None:
                if exists:
                    dst.write(src.read(offset, length), offset)

            src.diff_iterate(0, src.size(), None, extent)
            dst.flush()

    async def write_image(self, sid: str, store: dict[str, Any], name: str, data: bytes) -> None:
        """DATA written over the whole image (the cloud-init drive: Cloudinit.pm
        commit_cloudinit_disk's `qemu-img dd -n ... osize=<the volume's size>`; a larger DATA
        grows the image to the next 4 MiB first), through librbd as the storage's client."""
        await self._in_thread(f"writing '{name}'", CLI_TIMEOUT, self._librbd_write, self.client(sid, store), name, data)

    @staticmethod
    def _librbd_write(cli: dict[str, str], name: str, data: bytes) -> None:
        rbd = _import_rbd()
        with _pool(cli) as ioctx, rbd.Image(ioctx, name) as image:
            if image.size() < len(data):
                image.resize(-(-len(data) // (4 * 1024**2)) * 4 * 1024**2)
            image.write(data.ljust(image.size(), b"\0"), 0)
            image.flush()

    async def import_data(self, sid: str, store: dict[str, Any], name: str, source: str) -> None:
        """A disk image file's data onto the image NAME (an `import-from` of a file: Qemu.pm's
        qemu-img convert onto the volume it allocated): a qcow2 converted to raw first (imports.py),
        every non-zero 4 MiB block written at its offset, through librbd as the storage's client."""
        await self._in_thread(f"import '{source}'", CLI_TIMEOUT * 10, self._librbd_import, self.client(sid, store), name, source)

    @staticmethod
    def _librbd_import(cli: dict[str, str], name: str, source: str) -> None:
        from lab.pve import imports

        rbd = _import_rbd()
        block = 4 * 1024**2
        with imports.raw_view(source) as raw, open(raw, "rb") as data, _pool(cli) as ioctx, rbd.Image(ioctx, name) as image:
            offset = 0
            while chunk := data.read(block):
                if chunk.count(0) != len(chunk):
                    image.write(chunk, offset)
                offset += len(chunk)
            image.flush()

    async def resize_image(self, sid: str, store: dict[str, Any], name: str, size_bytes: int) -> None:
        """RBDPlugin volume_resize: `rbd resize` of the volume's own image (parse_volname: a linked
        clone's `base-N-disk-M/vm-X-disk-K` is the image `vm-X-disk-K`); the error names the volume."""
        mib = max(1, (int(size_bytes) + 1024 * 1024 - 1) // (1024 * 1024))
        image = name.rsplit("/", 1)[-1]
        await self.rbd(sid, store, ["resize", "--no-progress", "--size", str(mib), image], f"rbd resize '{name}' error")

    async def image_size(self, sid: str, store: dict[str, Any], name: str) -> int:
        """The image's size in bytes: `rbd info NAME --format json`, what pve-storage's RBDPlugin
        volume_size_info asks for one volume (rbd_volume_info). It runs rbd with its stderr
        ignored (`errfunc => sub { }`), so a failure is PVE::Tools run_command's own words,
        `command '/usr/bin/rbd ... info NAME --format json' failed: exit code N`, the command as
        PVE builds it for the storage (RBDPlugin $rbd_cmd, CephConfig ceph_connect_option: the
        storage's conf and keyring under /etc/pve/priv/ceph); ``enoent`` tells the lab the image is gone."""
        args = ["info", name, "--format", "json"]
        size = await self._image_size_librbd(sid, store, name)
        if size is not None:
            return size
        try:
            out = await self.rbd(sid, store, args, "rbd error")
        except RbdError as exc:
            cli = self.client(sid, store)
            priv = f"/etc/pve/priv/ceph/{sid}"
            connect = ["-c", f"{priv}.conf", "-m", cli["mon_host"], "--auth_supported", "cephx", "-n", f"client.{cli['user']}", "--keyring", f"{priv}.keyring"]
            command = " ".join(["/usr/bin/rbd", "-p", cli["pool"], *connect, *args])
            why = f"exit code {exc.exit_code}" if exc.exit_code is not None else str(exc).rpartition(": ")[2]  # got timeout
            raise RbdError(f"command '{command}' failed: {why}", exit_code=exc.exit_code, enoent="(2) No such file or directory" in str(exc)) from None
        return int(json.loads(out or "{}").get("size", 0))

    async def _image_size_librbd(self, sid: str, store: dict[str, Any], name: str) -> int | None:
        """The image's size through librbd (Debian's python3-rbd, in a worker thread), as the
        storage's client with its keyring, connected for this one question as `rbd info` connects:
        the same answer from the same cluster and the same access check, for a third of the CPU
        (about 14 ms against the CLI's 40: the lab shares the machine's two cores with the engine
        it serves, where a real PVE spends its own). None when it fails or cannot tell: the caller
        then runs the CLI, whose failure is PVE's, word for word."""
        if self.fake:
            return None
        cli = self.client(sid, store)
        if not cli["mon_host"] or not self.has_keyring(sid):
            return None
        try:
            return int(await self._in_thread("rbd info", CONNECT_TIMEOUT * 2, self._librbd_size, cli, name))
        except RbdError:  # any failure: the CLI tells it in PVE's words
            return None

    @staticmethod
    def _librbd_size(cli: dict[str, str], name: str) -> int:
        rbd = _import_rbd()
        with _pool(cli) as ioctx, rbd.Image(ioctx, name, read_only=True) as image:
            return int(image.size())

    async def image_names(self, sid: str, store: dict[str, Any]) -> list[str]:
        """The pool's image names, `rbd ls --format json`: what pve-storage's RBDPlugin
        find_free_diskname asks before it allocates a disk (names only: no image is opened)."""
        return [str(name) for name in json.loads(await self.rbd(sid, store, ["ls", "--format", "json"], "rbd error") or "[]")]

    async def list_images(self, sid: str, store: dict[str, Any]) -> dict[str, int]:
        """{volume name: size in bytes} of the pool (rbd ls -l, RBDPlugin rbd_ls: list_images,
        vdisk_list): a linked clone is `base-N-disk-M/vm-X-disk-K` (volume_name).

        `rbd ls -l` opens every image it lists, and fails with `listing images failed: (2) No such
        file or directory` when one is removed meanwhile (VMs destroyed in parallel). The lab lists
        to keep its own picture of the pool in step (this is not a PVE call), so it tries again:
        a VM's destroy must not fail because another VM's disk went away at the same moment."""
        for attempt in range(5):
            try:
                out = await self.rbd(sid, store, ["ls", "-l", "--format", "json"], "rbd error")
                break
            except RbdError as exc:
                if "(2) No such file or directory" not in str(exc) or attempt == 4:
                    raise
                await asyncio.sleep(0.2)
        images: dict[str, int] = {}
        for entry in json.loads(out or "[]"):
            if entry.get("snapshot"):
                continue
            images[volume_name(entry)] = int(entry.get("size", 0))
        return images
