"""The lab PVE's process: `python -m lab.pve.server --config <state>/pve/config.json` (started
detached by `lab.pve.start()`). It checks fakepve is the pinned version with the pinned hooks
(compat.py), then serves every node's API (app.py) and the control channel (control_app.py)
until SIGTERM, when VMs release their locks.

    python -m lab.pve.server --pin-fakepve    # after reviewing a fakepve change: re-pin compat.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import fakepve
from aiohttp import web
from fakepve import errors as fake_errors

from lab.pve import compat
from lab.pve.app import LabPve
from lab.pve.control_app import control_app

LOG = logging.getLogger("lab.pve")


def check_fakepve() -> None:
    if fakepve.__version__ != compat.FAKEPVE_VERSION:
        raise SystemExit(f"lab.pve needs fakepve=={compat.FAKEPVE_VERSION} (installed: {fakepve.__version__}); its hooks are pinned in lab/pve/compat.py")
    changed = compat.changed_hooks()
    if changed:
        raise SystemExit("fakepve hooks overridden by lab.pve changed: " + ", ".join(changed))


async def serve(config: dict[str, Any]) -> None:
    pve = LabPve(config)
    await pve.start(config["cert_file"], config["key_file"])
    runner = web.AppRunner(control_app(pve), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config["control_host"], config["control_port"], reuse_address=True).start()
    pve.control_runner = runner
    LOG.info(
        "lab PVE (fakepve %s, mode %s, time scale %s) on %s, control http://%s:%s, calls in %s",
        fakepve.__version__,
        pve.mode,
        pve.time_scale,
        ", ".join(f"{n}={a}" for n, a in pve.node_addr.items()),
        config["control_host"],
        config["control_port"],
        pve.calls.path if pve.calls else "-",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    LOG.info("stopping")
    await pve.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.pve.server")
    parser.add_argument("--config")
    parser.add_argument("--pin-fakepve", action="store_true", help="re-pin the fakepve methods lab.pve overrides or uses (compat.py)")
    args = parser.parse_args(argv)
    if args.pin_fakepve:
        compat.update(LabPve)
        return 0
    if not args.config:
        parser.error("--config is required")
    config = json.loads(Path(args.config).read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("fakepve").setLevel(logging.WARNING)
    for key in [k for k in os.environ if k.startswith("CEPH_")]:
        del os.environ[key]
    check_fakepve()
    fake_errors  # noqa: B018 - imported so a broken catalogue fails at start, not on first use
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
