"""A Proxmox VE API client for the dynamic providers, verify and the drill (proxmoxer over HTTPS,
API-token auth), reached through any live node of the cluster.

Every PVE node serves the whole cluster's API (pveproxy forwards a node's calls to it), so a
client tries the configured endpoint first and then each node's own address on the endpoint's
port (:func:`candidates`). A candidate that does not take a TCP connection within
:data:`CONNECT_BOUND` seconds is skipped, and the one that answered is remembered for the rest of
the process (a run of the engine's provider process, of verify, of the drill), so a dead endpoint
costs one bound per run. The proxmoxve plugin built here does the same (tools/proxmoxve/endpoints.go).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NotRequired, Protocol, TypedDict
from urllib.parse import urlsplit

from components.errors import OperatorError, failed

# proxmoxer and requests are imported where they are used (the provider process): the program
# itself never calls the API, and its start-up stays fast.


def api_errors() -> tuple[type[Exception], ...]:
    """What a failed API call raises: PVE's answer (proxmoxer), the transport (requests), or TLS setup (OSError)."""
    import requests
    from proxmoxer.core import ResourceException  # type: ignore[import-untyped]

    return (ResourceException, requests.RequestException, OSError)


# seconds a candidate may take to accept a TCP connection before the next one is tried
CONNECT_BOUND = 2.0
# seconds a call waits for PVE's answer (proxmoxer's timeout): the config's proxmox.apiTimeout
DEFAULT_TIMEOUT = 30

_live: dict[tuple[str, ...], str] = {}  # candidates -> the URL that answered last, for the process
_live_lock = threading.Lock()


class ApiProps(TypedDict):
    """The ``api`` input of a PVE-backed dynamic resource (RbdStorage, Owners): :func:`api_props` writes it,
    :func:`connect` reads it. The keys are the state's: renaming one changes every deployed stack."""

    endpoint: str  # https://pve-node1:8006
    token: Any  # "user@realm!name=secret": a secret Output in the program, its value in the provider
    verifyTls: bool
    caFile: str  # "" for the system's CAs
    nodes: list[str]  # the cluster's node addresses, the endpoint's fallbacks (absent from older states)
    timeout: NotRequired[int]  # proxmox.apiTimeout, only when it is not DEFAULT_TIMEOUT: a state made before it has none


class PveApi(Protocol):
    """What callers use of proxmoxer's ``ProxmoxAPI``, which ships no type hints: a path built by
    attribute and call (``api.nodes(node).storage(storage_id).status``) or given whole
    (``api("access/permissions")``), then the HTTP method (``.get()``, ``.post(**data)``)."""

    def __getattr__(self, name: str) -> PveApi: ...

    def __call__(self, path: str | int) -> PveApi: ...

    def get(self, *path: str | int, **params: Any) -> Any: ...

    def post(self, *path: str | int, **data: Any) -> Any: ...

    def put(self, *path: str | int, **data: Any) -> Any: ...

    def delete(self, *path: str | int, **params: Any) -> Any: ...


def api_props(endpoint: str, token: Any, verify_tls: bool, ca_file: str | None, nodes: Sequence[str] = (), timeout: int = DEFAULT_TIMEOUT) -> ApiProps:
    """The ``api`` input of a PVE-backed dynamic resource (``token`` is a secret Output; ``nodes``
    the cluster's node addresses, the endpoint's fallbacks; ``timeout`` the seconds a call waits for
    an answer, written only when it is not the default, so a stack's inputs stay as they were)."""
    props = ApiProps(endpoint=endpoint, token=token, verifyTls=verify_tls, caFile=ca_file or "", nodes=list(nodes))
    if timeout != DEFAULT_TIMEOUT:
        props["timeout"] = timeout
    return props


def candidates(endpoint: str, nodes: Sequence[str] = ()) -> list[str]:
    """The API's URLs in the order they are tried: the endpoint, then each node's address on its port."""
    url = urlsplit(endpoint)
    port = url.port or 8006
    out = [endpoint.rstrip("/")]
    for address in nodes:
        host = f"[{address}]" if ":" in address else address
        candidate = f"{url.scheme or 'https'}://{host}:{port}"
        if candidate not in out and urlsplit(candidate).netloc != url.netloc:
            out.append(candidate)
    return out


def _tcp_probe(host: str, port: int, bound: float) -> None:
    socket.create_connection((host, port), timeout=bound).close()


def live_endpoint(urls: Sequence[str], bound: float = CONNECT_BOUND, probe: Callable[[str, int, float], None] = _tcp_probe) -> str:
    """The first of ``urls`` that takes a connection within ``bound`` seconds (the one remembered
    from earlier in the process first); OperatorError naming each and the fix when none does."""
    key = tuple(urls)
    with _live_lock:
        remembered = _live.get(key)
    order = ([remembered] if remembered else []) + [u for u in urls if u != remembered]
    reasons = []
    for url in order:
        parts = urlsplit(url)
        started = time.monotonic()
        try:
            probe(parts.hostname or "", parts.port or 8006, bound)
        except OSError as exc:
            took = time.monotonic() - started
            why = f"no connection within {bound:g} s" if isinstance(exc, TimeoutError) or took >= bound else (exc.strerror or str(exc))
            reasons.append(f"{url} ({why})")
            continue
        with _live_lock:
            _live[key] = url
        return url
    raise OperatorError(
        "Proxmox VE API: no node of the cluster answers: "
        + ", ".join(reasons)
        + "; check proxmox.endpoint and proxmox.nodes[].address, and that at least one node is up"
    )


def connect(api: ApiProps, timeout: float | None = None) -> PveApi:
    """A proxmoxer client for ``api`` (see :func:`api_props`) on the first live candidate; each call
    waits ``timeout`` seconds for an answer, by default the ``api``'s own (proxmox.apiTimeout)."""
    from proxmoxer import ProxmoxAPI  # type: ignore[import-untyped]

    url = urlsplit(live_endpoint(candidates(api["endpoint"], api.get("nodes") or ())))
    user_token, _, secret = str(api["token"]).partition("=")
    user, _, token_name = user_token.partition("!")
    verify: bool | str = (api.get("caFile") or True) if api.get("verifyTls", True) else False
    try:
        return ProxmoxAPI(
            url.hostname,
            port=url.port or 8006,
            user=user,
            token_name=token_name,
            token_value=secret,
            verify_ssl=verify,
            timeout=timeout if timeout is not None else api.get("timeout", DEFAULT_TIMEOUT),
        )
    except Exception as exc:  # proxmoxer raises plain exceptions for bad URLs and TLS errors
        raise failed(f"Proxmox VE API {url.geturl()}: {type(exc).__name__}", exc) from None


def reason(exc: Exception) -> str:
    """PVE's own words for a failed call (never the token: proxmoxer does not echo headers)."""
    from proxmoxer.core import ResourceException

    if isinstance(exc, ResourceException):
        detail = exc.content or exc.status_message
        if exc.errors:
            detail = f"{detail} {exc.errors}"
        if exc.status_code == 403:
            from components.pve_rights import refused_hint

            detail = f"{detail}{refused_hint(str(detail))}"
        return f"{exc.status_code} {detail}".strip()
    return f"{type(exc).__name__}: {exc}"
