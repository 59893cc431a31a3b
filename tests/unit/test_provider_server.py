"""components/provider_server.py against the SDK's own provider server (pulumi/dynamic/__main__.py).

The hook reaches into that server's private error path. These tests start the server as the engine
does (`python -m pulumi.dynamic`, tools' pulumi-resource-pulumi-python) and call its ``Check`` over
gRPC with a provider that fails: what they receive is what the engine receives. An SDK upgrade
that changes the path fails here, not in an operator's run.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dill
import grpc
import pytest
from google.rpc import status_pb2
from pulumi.runtime import rpc
from pulumi.runtime.proto import provider_pb2, provider_pb2_grpc

from components import provider_server
from tests.unit.failing_provider import Failing

ROOT = Path(__file__).resolve().parents[2]
# how pulumi-resource-pulumi-python starts the server
SERVER = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); runpy.run_module('pulumi.dynamic', run_name='__main__', alter_sys=True)"
)
SAID = "storage x is not active on pve-node3. The storage is recorded in the state; the next `pulumi up` checks it and finishes it"


@pytest.fixture(scope="module")
def server() -> Iterator[provider_pb2_grpc.ResourceProviderStub]:
    process = subprocess.Popen([sys.executable, "-u", "-c", SERVER, "127.0.0.1:1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield provider_pb2_grpc.ResourceProviderStub(channel)
    finally:
        process.kill()
        process.wait()


def check(server: provider_pb2_grpc.ResourceProviderStub, error: str) -> grpc.RpcError:
    news = provider_pb2.CheckRequest().news
    news.update({"__provider": base64.b64encode(dill.dumps(Failing())).decode(), "error": error})
    with pytest.raises(grpc.RpcError) as info:
        server.Check(provider_pb2.CheckRequest(urn="urn:pulumi:s::p::pulumi-python:dynamic:Resource::x", news=news), timeout=60)
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    return info.value


def test_an_operator_error_reaches_the_engine_as_its_message_alone(server: provider_pb2_grpc.ResourceProviderStub) -> None:
    # the first call loads the provider's module, and with it the hook: its own failure is reported the same way
    assert check(server, "operator").details() == "pool exists; set adopt.pool"


def test_any_other_error_keeps_its_traceback(server: provider_pb2_grpc.ResourceProviderStub) -> None:
    details = check(server, "bug").details()
    assert details.startswith("Traceback (most recent call last):") and "KeyError: 'a bug of ours'" in details


def test_a_partial_create_reaches_the_engine_as_created_but_not_initialised(server: provider_pb2_grpc.ResourceProviderStub) -> None:
    error = check(server, "partial")
    assert error.details() == SAID
    raw = dict(error.trailing_metadata())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    failed = provider_pb2.ErrorResourceInitFailed()
    assert status.code == grpc.StatusCode.UNKNOWN.value[0] and status.details[0].Unpack(failed)
    assert (failed.id, list(failed.reasons), failed.refresh_before_update) == ("x", [SAID], True)
    assert rpc.deserialize_properties(failed.properties) == {"storageId": "x"}


def test_the_hook_is_only_installed_in_the_server() -> None:
    """Imported anywhere else (a test, verify), the process's traceback module is left alone."""
    import traceback

    assert provider_server.server_module() is None
    assert not isinstance(traceback, provider_server.OperatorTraceback)
