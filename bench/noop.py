"""A run that changes nothing, the program's most common run: no-op `preview` and `up` of the lab stack.

    make demo                                    # the lab stack, converged
    .venv/bin/python bench/noop.py [--runs 5] [--baseline REV]

Runs `pulumi preview -s lab` and `pulumi up --yes -s lab` RUNS times each (the stack changes
nothing), as the README runs them (the refresh first, in plugins of its own) and with
`--run-program` (each resource refreshed when the program declares it), and prints the median
and the spread (min-max); then, for each way, where one preview's time goes, from the engine's own
log (`-v=9`): the engine and plugins starting, the refresh (every Read), the program (the language
host's Run: Python start-up, then each resource's Check and Diff), the shutdown. With
--baseline, the same runs of the program at REV (a git worktree, the same stack,
state and config) in the same session, and the ratio. Figures, not pass/fail (issue #22).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def environment() -> dict[str, str]:
    lab = json.loads((ROOT / ".lab" / "lab.json").read_text())
    env = dict(os.environ)
    # the pinned toolchain as tools/env.sh sets it, so the bench runs without sourcing it first
    env["PATH"] = f"{ROOT / '.tools' / 'bin'}:{env.get('PATH', '')}"
    env.setdefault("PULUMI_HOME", str(ROOT / ".tools" / "pulumi-home"))
    env.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")
    env.setdefault("PULUMI_BACKEND_URL", f"file://{ROOT / '.state'}")
    env.setdefault("PULUMI_CONFIG_PASSPHRASE", "lab-only-passphrase")
    env["SSL_CERT_FILE"] = lab["pve"]["ca_bundle"]
    return env


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0 or "unchanged" not in done.stdout or any(f" to {op}" in done.stdout for op in ("create", "update", "delete", "replace")):
        raise SystemExit(f"bench: `{' '.join(argv)}` in {cwd} was not a clean no-op:\n{done.stdout[-1500:]}\n{done.stderr[-800:]}")
    return seconds


# The other way to refresh (pulumi/pulumi#19449): resource by resource in the program's run, one
# start of the plugins a pass. Measured beside the README's commands: on 2 cores it gained nothing
# (2026-12-05: up 4.53 s against 4.54 s), so the README does not ask for it.
RUN_PROGRAM = ["--run-program"]


def measure(cwd: Path, env: dict[str, str], runs: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"no-op preview": [], "no-op up": [], "run-program preview": [], "run-program up": []}
    for _ in range(runs):  # interleaved, so that a slow minute of the machine weighs on both alike
        for mode, extra in (("no-op", []), ("run-program", RUN_PROGRAM)):
            figures[f"{mode} preview"].append(timed(["pulumi", "preview", "-s", "lab", "--non-interactive", *extra], cwd, env))
            figures[f"{mode} up"].append(timed(["pulumi", "up", "--yes", "-s", "lab", "--non-interactive", *extra], cwd, env))
    return figures


def phases(cwd: Path, env: dict[str, str], extra: list[str]) -> list[tuple[str, float]]:
    """One preview's phases from the engine's log lines (their own timestamps)."""
    start = time.time()
    done = subprocess.run(
        ["pulumi", "preview", "-s", "lab", "--non-interactive", *extra, "-v=9", "--logtostderr", "--logflow"], cwd=cwd, env=env, capture_output=True, text=True
    )
    end = time.time()
    marks: dict[str, float] = {}
    for line in done.stderr.splitlines():
        at = line.find('{"time"')
        if at < 0:
            continue
        try:
            entry = json.loads(line[at:])
        except ValueError:
            continue
        when = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
        msg = str(entry.get("msg", ""))
        if ".Read(" in msg and "executing" in msg:
            marks.setdefault("first read", when)
        if ".Read(" in msg or (".Diff(" in msg and "run" not in marks):
            marks["refresh done"] = when
        if "langhost[python].Run(" in msg and "executing" in msg:
            marks["run"] = when
        if "ResourceMonitor.RegisterResource received" in msg:
            marks.setdefault("first resource", when)
        if "langhost[python].Run(" in msg and "success" in msg:
            marks["run done"] = when
    if not {"first read", "run", "first resource", "run done"} <= set(marks):
        return []
    if marks["first read"] > marks["run"]:  # --run-program: each Read in the program's run, before its Check
        return [
            ("engine and plugins start", marks["run"] - start),
            ("program start (Python, imports, config)", marks["first resource"] - marks["run"]),
            ("program: each resource's Read, Check, Diff", marks["run done"] - marks["first resource"]),
            ("shutdown", end - marks["run done"]),
        ]
    return [
        ("engine and plugins start", marks["first read"] - start),
        ("refresh (every Read, with its Diff)", marks["run"] - marks["first read"]),
        ("program start (Python, imports, config)", marks["first resource"] - marks["run"]),
        ("program: each resource's Check and Diff", marks["run done"] - marks["first resource"]),
        ("shutdown", end - marks["run done"]),
    ]


def worktree(rev: str, into: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", str(into), rev], cwd=ROOT, check=True, capture_output=True)
    for shared in (".venv", ".lab"):  # the same interpreter, and the lab's files the config names by relative path
        (into / shared).symlink_to(ROOT / shared)
    shutil.copy(ROOT / "Pulumi.lab.yaml", into / "Pulumi.lab.yaml")  # the stack's config, its secret token included
    return into


def line(name: str, values: list[float], base: list[float] | None) -> str:
    text = f"  {name:<21}{statistics.median(values):>7.2f}s  ({min(values):.2f}-{max(values):.2f}s)"
    if base:
        text += f"   before {statistics.median(base):.2f}s ({min(base):.2f}-{max(base):.2f}s), ratio {statistics.median(values) / statistics.median(base):.2f}x"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", metavar="REV", help="also measure the program at this git revision, for the ratio")
    args = parser.parse_args()
    env = environment()
    base: dict[str, list[float]] = {}
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            tree = worktree(args.baseline, Path(tmp) / "baseline")
            try:
                base = measure(tree, env, args.runs)
                base_phases = phases(tree, env, [])
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    now = measure(ROOT, env, args.runs)
    print(f"the lab stack (1 HA VM, 28 resources), {args.runs} runs each, {os.cpu_count()} cores; run-program: with --run-program")
    for name, values in now.items():
        print(line(name, values, base.get(name)))
    for title, extra in (("as the README runs it", []), ("--run-program", RUN_PROGRAM)):
        print(f"\nwhere one no-op preview's time goes ({title}; the engine's log)" + (f"; before: at {args.baseline}" if base and not extra else ""))
        for i, (name, seconds) in enumerate(phases(ROOT, env, extra)):
            before = f"   before {base_phases[i][1]:.2f}s" if base and not extra and i < len(base_phases) else ""
            print(f"  {name:<44}{seconds:>6.2f}s{before}")


if __name__ == "__main__":
    main()
