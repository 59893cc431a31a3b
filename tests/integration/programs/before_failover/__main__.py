"""The real program as it was before the API failover (issue #20): the proxmoxve provider without
the nodes' ssh.node entries and the storage's `api` without the node addresses, so a stack
deployed with it records the configuration an upgrade starts from."""

import runpy
from pathlib import Path

import pulumi_proxmoxve

import components.stack as stack
from clients.pve import api as pve_api

_provider = pulumi_proxmoxve.Provider
_api_props = pve_api.api_props


def provider_without_nodes(*args, ssh=None, **kwargs):  # type: ignore[no-untyped-def]
    return _provider(*args, **kwargs)


def api_props_without_nodes(endpoint, token, verify_tls, ca_file, nodes=(), timeout=pve_api.DEFAULT_TIMEOUT):  # type: ignore[no-untyped-def]
    props = _api_props(endpoint, token, verify_tls, ca_file, timeout=timeout)  # the default timeout writes no key, as before it existed
    props.pop("nodes")
    return props


stack.proxmoxve.Provider = provider_without_nodes  # type: ignore[misc]
stack.api_props = api_props_without_nodes  # type: ignore[assignment]
runpy.run_path(str(Path(stack.__file__).resolve().parents[1] / "__main__.py"), run_name="__main__")
