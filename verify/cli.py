"""python -m verify: the runbook's checks against a deployed stack, read-only.

Exit codes: 0 every check passed (best-practice warnings allowed); 1 a check failed; 2 verify
could not run (bad config, the Ceph admin node or the PVE API unreachable), with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

from verify import checks, report
from verify.checks import Context, Finding
from verify.probe import Live, Once, Probe
from verify.target import Target, TargetError, load

EPILOG = """\
examples:
  python -m verify --stack dev                  # every check, one line each
  python -m verify --stack dev --json > verify.json
  python -m verify --stack-config Pulumi.dev.yaml --stack-outputs outputs.json --token-env PVE_TOKEN
  make verify                                   # the lab stack
"""

MARK = {"pass": "✓", "fail": "✗", "warn": "⚠", "error": "?"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m verify",
        description="Check a deployed stack against the runbook (steps 1-5 and the best practices of 8), read-only: it changes nothing.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--stack", help="Pulumi stack: its Pulumi.<stack>.yaml, its secrets (pulumi config get) and its outputs")
    p.add_argument("--project-dir", help="the Pulumi project's folder (default: the current one)")
    p.add_argument("--stack-config", metavar="FILE", help="a Pulumi.<stack>.yaml to read instead (paths in it are relative to its folder)")
    p.add_argument("--stack-outputs", metavar="FILE", help="the JSON of `pulumi stack output --json` to read instead")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the API token (instead of the stack's secret)")
    p.add_argument("--token-file", metavar="FILE", help="file holding the API token USER@REALM!NAME=SECRET")
    p.add_argument("--timeout", type=float, default=20, help="seconds one SSH command or API call may take (default 20)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (verify/report.schema.json) on stdout; the lines go to stderr")
    return p


def verify(ctx: Context, workers: int = 8) -> list[Finding]:
    """Every check, at the same time (each question is asked once: :class:`Once`), in the runbook's order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda check: check.run(ctx), checks.CHECKS))


def line(finding: Finding) -> str:
    text = f"{MARK[finding.status]} {finding.step} {finding.title}".replace("  ", " ")
    if finding.status == "pass":
        return f"{text}: {finding.summary}"
    text += ": " + "; ".join(finding.problems)
    if finding.status == "error":
        return text
    return f"{text} → {finding.fix}" if finding.fix else text


def outcome(findings: list[Finding]) -> tuple[str, int]:
    if any(f.status == "error" for f in findings):
        return "error", 2
    if any(f.status == "fail" for f in findings):
        return "failed", 1
    return "passed", 0


def main(argv: list[str] | None = None, probe: Probe | None = None) -> int:
    args = parser().parse_args(argv)
    out: TextIO = sys.stderr if args.json else sys.stdout
    try:
        target = load(args)
    except TargetError as exc:
        for problem in exc.problems:
            print(f"verify: {problem}", file=out)
        print("verify: could not run (exit 2): fix the above and run it again", file=out)
        if args.json:
            print(json.dumps(report.build("error", [], args.stack, 0.0, reasons=exc.problems), indent=2))
        return 2
    live = None
    if probe is None:
        probe = live = Live(target, timeout=args.timeout)
    try:
        return finish(target, Once(probe), out, args.json, time.monotonic())
    finally:
        if live is not None:
            live.close()


def finish(target: Target, probe: Probe, out: TextIO, as_json: bool, started: float) -> int:
    name = target.stack or "(from --stack-config)"
    print(f"Verifying stack {name} against the runbook (read-only): {len(target.config.proxmox.nodes)} nodes, {len(target.config.vms)} VMs", file=out)
    findings = verify(Context(target.config, probe, target.outputs))
    for finding in findings:
        print(line(finding), file=out, flush=True)
    result, code = outcome(findings)
    seconds = time.monotonic() - started
    counts = {s: sum(f.status == s for f in findings) for s in report.STATUSES}
    summary = f"verify: {counts['pass']} passed, {counts['fail']} failed, {counts['warn']} warning{'' if counts['warn'] == 1 else 's'}, {counts['error']} could not run ({seconds:.1f} s)"
    if code == 2:
        summary += ": verify could not run every check (exit 2); see the ? lines"
    print(summary, file=out)
    if as_json:
        print(json.dumps(report.build(result, findings, target.stack, seconds), indent=2))
    return code
