"""The program's start-up stays lean: the SSH and HTTP client libraries load only in the providers."""

from __future__ import annotations

import subprocess
import sys


def test_program_import_loads_no_ssh_or_http_client() -> None:
    code = "import sys, components.stack, components.credentials; print(sorted(m for m in ('paramiko', 'proxmoxer', 'requests') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
