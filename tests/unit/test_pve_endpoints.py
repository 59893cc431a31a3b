"""The PVE API through any live node (clients.pve.api): which candidate is picked, the bound on
a dead one, the one remembered, and the error when every node is down."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from clients.pve import api as pve_api
from components.errors import OperatorError

NODES = ["127.10.20.11", "127.10.20.12", "127.10.20.13"]


@pytest.fixture(autouse=True)
def forget() -> Iterator[None]:
    pve_api._live.clear()
    yield
    pve_api._live.clear()


def test_the_endpoint_comes_first_then_each_other_node_on_its_port() -> None:
    assert pve_api.candidates("https://127.10.20.11:8006", NODES) == [
        "https://127.10.20.11:8006",
        "https://127.10.20.12:8006",
        "https://127.10.20.13:8006",
    ]
    assert pve_api.candidates("https://pve.example:8443/", ["10.0.0.1", "fd00::2"]) == [
        "https://pve.example:8443",
        "https://10.0.0.1:8443",
        "https://[fd00::2]:8443",
    ]


def probe_with(down: dict[str, str], calls: list[str]):
    def probe(host: str, port: int, bound: float) -> None:
        calls.append(host)
        if host in down:
            raise (TimeoutError("timed out") if down[host] == "cut" else ConnectionRefusedError(111, "Connection refused"))

    return probe


def test_a_dead_endpoint_is_passed_over_and_the_live_node_remembered() -> None:
    urls = pve_api.candidates("https://127.10.20.11:8006", NODES)
    calls: list[str] = []
    probe = probe_with({"127.10.20.11": "off"}, calls)
    assert pve_api.live_endpoint(urls, probe=probe) == "https://127.10.20.12:8006"
    assert calls == ["127.10.20.11", "127.10.20.12"]
    calls.clear()
    assert pve_api.live_endpoint(urls, probe=probe) == "https://127.10.20.12:8006"
    assert calls == ["127.10.20.12"], "the live node is remembered: the dead endpoint costs nothing more"


def test_a_healthy_endpoint_is_used() -> None:
    calls: list[str] = []
    assert pve_api.live_endpoint(pve_api.candidates("https://127.10.20.11:8006", NODES), probe=probe_with({}, calls)) == "https://127.10.20.11:8006"
    assert calls == ["127.10.20.11"]


def test_every_node_down_names_each_node_why_and_the_fix() -> None:
    urls = pve_api.candidates("https://127.10.20.11:8006", NODES)
    with pytest.raises(OperatorError) as caught:
        pve_api.live_endpoint(urls, probe=probe_with({"127.10.20.11": "off", "127.10.20.12": "cut", "127.10.20.13": "off"}, []))
    message = str(caught.value)
    assert "no node of the cluster answers" in message
    assert "https://127.10.20.11:8006 (Connection refused)" in message
    assert "https://127.10.20.12:8006 (no connection within 2 s)" in message
    assert "proxmox.endpoint and proxmox.nodes[].address" in message
    assert "\n" not in message


def test_a_node_cut_from_the_network_costs_at_most_the_bound() -> None:
    """A real socket whose accept queue is full: the SYN is dropped, as on a cut link."""
    cut = socket.socket()
    cut.bind(("127.0.0.1", 0))
    cut.listen(0)
    port = cut.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue; later connections are never completed
            s = socket.socket()
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                s.close()
                break
            fillers.append(s)
        live = socket.socket()
        live.bind(("127.0.0.2", port))
        live.listen(8)
        try:
            started = time.monotonic()
            url = pve_api.live_endpoint([f"https://127.0.0.1:{port}", f"https://127.0.0.2:{port}"], bound=0.5)
            took = time.monotonic() - started
        finally:
            live.close()
        assert url == f"https://127.0.0.2:{port}"
        assert 0.4 <= took < 1.0, f"a cut candidate cost {took:.2f} s against a bound of 0.5 s"
    finally:
        for s in fillers:
            s.close()
        cut.close()


def test_the_api_timeout_is_written_only_when_it_is_not_the_default() -> None:
    from components.config import ProxmoxSpec

    assert ProxmoxSpec.model_fields["api_timeout"].default == pve_api.DEFAULT_TIMEOUT
    default = pve_api.api_props("https://127.10.20.11:8006", "t", True, None, NODES)
    assert "timeout" not in default  # a stack's recorded inputs stay as they were before the key
    assert pve_api.api_props("https://127.10.20.11:8006", "t", True, None, NODES, timeout=5)["timeout"] == 5


def test_a_call_gives_up_after_the_api_timeout_naming_it() -> None:
    """proxmox.apiTimeout reaches proxmoxer: an endpoint that takes the connection and never answers
    fails the call after the timeout, not after the default 30 s."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        api = pve_api.connect(pve_api.api_props(url, "root@pam!t=secret", False, None, timeout=1))
        started = time.monotonic()
        with pytest.raises(pve_api.api_errors()) as failure:
            api.version.get()
        assert time.monotonic() - started < 5
        assert "timed out" in str(failure.value).lower(), failure.value
