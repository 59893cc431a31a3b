"""A Proxmox VE API client for the dynamic providers (proxmoxer over HTTPS, API-token auth)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from components.dynamic import OperatorError

# proxmoxer and requests are imported where they are used (the provider process): the program
# itself never calls the API, and its start-up stays fast.


def api_errors() -> tuple[type[Exception], ...]:
    """What a failed API call raises: PVE's answer (proxmoxer), the transport (requests), or TLS setup (OSError)."""
    import requests
    from proxmoxer.core import ResourceException  # type: ignore[import-untyped]

    return (ResourceException, requests.RequestException, OSError)


def api_props(endpoint: str, token: Any, verify_tls: bool, ca_file: str | None) -> dict[str, Any]:
    """The ``api`` input of a PVE-backed dynamic resource (``token`` is a secret Output)."""
    return {"endpoint": endpoint, "token": token, "verifyTls": verify_tls, "caFile": ca_file or ""}


def connect(api: dict[str, Any], timeout: float = 30) -> Any:
    """A proxmoxer client for ``api`` (see :func:`api_props`)."""
    from proxmoxer import ProxmoxAPI  # type: ignore[import-untyped]

    url = urlsplit(api["endpoint"])
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
            timeout=timeout,
        )
    except Exception as exc:  # proxmoxer raises plain exceptions for bad URLs and TLS errors
        raise OperatorError(f"Proxmox VE API {api['endpoint']}: {type(exc).__name__}: {exc}") from None


def reason(exc: Exception) -> str:
    """PVE's own words for a failed call (never the token: proxmoxer does not echo headers)."""
    from proxmoxer.core import ResourceException

    if isinstance(exc, ResourceException):
        detail = exc.content or exc.status_message
        if exc.errors:
            detail = f"{detail} {exc.errors}"
        return f"{exc.status_code} {detail}".strip()
    return f"{type(exc).__name__}: {exc}"
