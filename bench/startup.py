"""Program start-up: importing the program's components and validating the config (no engine).

    .venv/bin/python bench/startup.py [--runs N]

Each run is a fresh interpreter (what the language host starts), timed from inside; prints the
median and the spread. A figure, not a pass/fail: the target is under 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import time
t = time.perf_counter()
import components.stack, components.credentials
from components import config
config.validate(RAW)
print(time.perf_counter() - t)
"""


def _raw() -> dict:
    import yaml

    with open(ROOT / "Pulumi.dev.yaml", encoding="utf-8") as handle:
        raw = {k.split(":", 1)[1]: v for k, v in yaml.safe_load(handle)["config"].items()}
    return {**raw, "proxmoxApiToken": "root@pam!pulumi=00000000-0000-0000-0000-000000000000"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", f"RAW = {_raw()!r}\n{PROBE}"], cwd=ROOT, capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip()))
    times.sort()
    print(f"program import + config validation, {runs} fresh interpreters")
    print(f"  median {statistics.median(times) * 1000:7.1f} ms")
    print(f"  min    {times[0] * 1000:7.1f} ms   max {times[-1] * 1000:7.1f} ms   stdev {statistics.pstdev(times) * 1000:5.1f} ms")


if __name__ == "__main__":
    main()
