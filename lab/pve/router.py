"""How a request reaches a handler, as PVE's API server routes it, and the record of each call.

- Paths: PVE's router (pve-common src/PVE/RESTHandler.pm, find_handler) splits the path on
  runs of '/' and skips empty fragments (`split('\\/+', $path)` then `grep { length($_) > 0 }`):
  `/nodes/pve-node2/qemu/102/` and `/nodes//pve-node2/qemu/102` are `/nodes/pve-node2/qemu/102`.
  The lab does the same once, for every route, before aiohttp routes the request
  (`PveRunner`): bpg's client POSTs `cluster/ha/resources/` and DELETEs
  `nodes/<node>/qemu/<vmid>/?purge=...`, which must reach the same handlers as without the slash.
- A method PVE has no handler for: 501 `Method '<METHOD> <rel_uri>' not implemented` (pve-manager
  PVE/HTTPServer.pm rest_handler; `rel_uri` is the decoded path after /api2/<format>, as sent,
  pve-http-server src/PVE/APIServer/AnyEvent.pm $split_abs_uri), with that message in the body
  (pve-http-server src/PVE/APIServer/Formatter/Standard.pm prepare_response_data).
- Every call is written to the call log (calllog.py) with whose answer it was: PVE's, or one
  the lab does not model, or a lab fault (an exception: 500, not a PVE answer).
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_parser import RawRequestMessage

from lab.pve import calllog

LOG = logging.getLogger("lab.pve")

# Keys the lab keeps on a request.
SENT = "lab.sent_path"  # the raw path the client sent (percent-encoded, no query)
KIND = "lab.kind"  # calllog kind, when a handler knows it is not a plain PVE answer
REACHED = "lab.reached"  # the request reached the lab's handlers (authenticated, body read)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def canonical_path(raw: str) -> str:
    """PVE::RESTHandler::find_handler: the path without empty fragments."""
    return "/" + "/".join(part for part in raw.split("/") if part)


def rel_uri(raw: str) -> str:
    """The decoded path after /api2/<format>, as sent (pve-http-server $split_abs_uri)."""
    path = urllib.parse.unquote(raw)
    found = re.match(r"^/api2/+[a-z][a-z0-9]+(/.*)?$", path)
    return (found.group(1) if found else None) or "/"


def not_implemented(method: str, raw_path: str) -> web.Response:
    """PVE's answer for a method it has no handler for (pve-manager PVE/HTTPServer.pm rest_handler)."""
    message = f"Method '{method} {rel_uri(raw_path)}' not implemented"
    return web.json_response({"data": None, "message": message}, status=501, reason=message[:200])


def _canonical_message(message: RawRequestMessage) -> tuple[RawRequestMessage, str]:
    raw = message.url.raw_path
    canonical = canonical_path(raw)
    if canonical == raw:
        return message, raw
    url = message.url.with_path(canonical, encoded=True, keep_query=True, keep_fragment=True)
    return message._replace(url=url, path=str(url)), raw


class PveRunner(web.AppRunner):
    """An AppRunner whose requests carry the canonical path (PVE's routing) from the start, so
    routing, fakepve's schema lookups and injected failures all see the one path PVE would
    route; the path as sent stays on the request (SENT) for the call log and 501 messages."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        make = server.request_factory

        def factory(message: RawRequestMessage, *args: Any) -> web.BaseRequest:
            message, sent = _canonical_message(message)
            request = make(message, *args)
            request[SENT] = sent
            return request

        server.request_factory = factory  # type: ignore[assignment]
        return server


def _message_of(response: web.StreamResponse) -> str | None:
    if not isinstance(response, web.Response) or response.content_type != "application/json" or response.status < 400:
        return None
    try:
        body = json.loads(response.text or "{}")
    except ValueError:
        return None
    return body.get("message") if isinstance(body, dict) else None


def call_recorder(log: calllog.CallLog, local_node: Callable[[web.BaseRequest], str | None], lab_fault: Callable[[web.BaseRequest], web.Response]):
    """The outermost middleware: one call log line per request, whatever happened inside."""

    def write(request: web.BaseRequest, status: int, kind: str, started: float, msg: str | None) -> None:
        try:
            log.write(
                calllog.entry(
                    node=local_node(request),
                    method=request.method,
                    path=request.get(SENT) or request.rel_url.raw_path,
                    query=list(request.rel_url.query.keys()),
                    status=status,
                    kind=kind,
                    ua=request.headers.get("User-Agent", ""),
                    started=started,
                    msg=msg,
                )
            )
        except OSError:
            LOG.exception("call log write failed")

    def kind_of(request: web.BaseRequest, status: int) -> str:
        if request.get(KIND):
            return request[KIND]
        if status == 500 and not request.get(REACHED):
            return calllog.LAB_FAULT  # fakepve's own catch-all: an exception before the handlers
        return calllog.PVE

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.time()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # aiohttp's own answers (no route outside /api2): nothing PVE-shaped was modelled
            write(request, exc.status, request.get(KIND) or (calllog.UNMODELLED if exc.status == 404 else calllog.PVE), started, exc.reason)
            raise
        except Exception:
            LOG.exception("lab fault in %s %s", request.method, request.get(SENT) or request.path)
            request[KIND] = calllog.LAB_FAULT
            response = lab_fault(request)
        write(request, response.status, kind_of(request, response.status), started, _message_of(response))
        return response

    return record
