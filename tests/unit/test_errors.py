"""components/errors.py: the one way a client's failure becomes the operator's message."""

from __future__ import annotations

from components.errors import OperatorError, PartiallyCreated, failed


def test_failed_says_the_action_the_clients_words_and_the_fix() -> None:
    error = failed("GET /storage/ceph-rbd", "401 Unauthorized: invalid token value!", "check proxmoxApiToken")
    assert isinstance(error, OperatorError)
    assert str(error) == "GET /storage/ceph-rbd: 401 Unauthorized: invalid token value!; check proxmoxApiToken"


def test_failed_names_an_exception_that_says_nothing() -> None:
    assert str(failed("rbd ls rbd-pool", TimeoutError())) == "rbd ls rbd-pool: TimeoutError"
    assert str(failed("rbd ls rbd-pool", ValueError(" not JSON \n"))) == "rbd ls rbd-pool: not JSON"


def test_a_partial_create_says_it_is_recorded() -> None:
    error = PartiallyCreated("storage x is not active on pve-node3.", "storage", "x", {"storageId": "x"})
    assert str(error) == "storage x is not active on pve-node3. The storage is recorded in the state; the next `pulumi up` checks it and finishes it"
    assert (error.id_, error.outs) == ("x", {"storageId": "x"})
