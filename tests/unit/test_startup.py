"""The program's start-up stays lean: the SSH and HTTP client libraries load only in the providers."""

from __future__ import annotations

import subprocess
import sys


def test_program_import_loads_no_ssh_or_http_client() -> None:
    code = "import sys, components.stack, components.credentials; print(sorted(m for m in ('paramiko', 'proxmoxer', 'requests') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# The modules whose providers the dynamic provider process unpickles (one of each a run), see
# components.stack; the first call of the refresh and of the program's Check waits for them.
PROVIDER_MODULES = ("owners", "ceph_health", "ha_preflight", "ceph_common", "ceph_scrub", "ceph_pool", "ceph_client", "pve_storage", "rbd_images")


def test_provider_modules_load_no_config_model() -> None:
    """The config model (pydantic, about 60 ms to import and build) is the program's alone."""
    imports = "; ".join(f"import components.{name}" for name in PROVIDER_MODULES)
    code = f"import sys; {imports}; print(sorted(m for m in ('pydantic', 'components.config') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
