"""After the failover: would Pulumi change anything? (``pulumi preview --expect-no-changes``)

A VM that HA moved must not show as a change: its node is only its initial placement. Any
change the preview proposes is reported with the preview's last lines.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def check(project_dir: str, stack: str, timeout: float = 900) -> tuple[bool, str]:
    if not Path(project_dir).is_dir():
        return False, f"--check-preview {project_dir}: not a directory (give the Pulumi project's folder)"
    argv = ["pulumi", "preview", "--expect-no-changes", "--non-interactive", "-s", stack]
    try:
        run = subprocess.run(argv, cwd=Path(project_dir), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return False, "the pulumi CLI is not on PATH (source tools/env.sh for the project's toolchain)"
    except subprocess.TimeoutExpired:
        return False, f"`pulumi preview -s {stack}` did not finish within {timeout:.0f} s"
    if run.returncode == 0:
        return True, f"pulumi preview -s {stack}: no changes after the failover"
    tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-12:])
    return False, f"pulumi preview -s {stack} --expect-no-changes failed (exit {run.returncode}):\n{tail}"
