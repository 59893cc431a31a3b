"""The drill's connection to one node's PVE API (proxmoxer, token, CA: clients.pve.api). What it reads,
path by path, is in clients/pve (``cluster.status(api.get)``, ``cluster_ha.status_current(api.get)``, ...)."""

from __future__ import annotations

from typing import Any

from clients.pve import api as pve_api
from components.errors import OperatorError
from drill.sources import Cluster


class ApiError(Exception):
    """A PVE API call failed; the message names the node's URL, the call and PVE's reason."""


class Pve:
    def __init__(self, url: str, cluster: Cluster, timeout: float = 10) -> None:
        self.url = url
        props = pve_api.api_props(url, cluster.token, cluster.verify_tls, cluster.ca_file)
        try:
            self._api = pve_api.connect(props, timeout=timeout)
        except OperatorError as exc:
            raise ApiError(str(exc)) from None

    def get(self, path: str, **params: Any) -> Any:
        try:
            return self._api.get(path.strip("/"), **params)
        except pve_api.api_errors() as exc:
            raise ApiError(f"{self.url}: GET /{path.strip('/')}: {pve_api.reason(exc)}") from None
