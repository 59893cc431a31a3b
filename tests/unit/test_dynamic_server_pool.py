"""The dynamic provider server takes more than 4 calls at once (components.provider_server.widen_server_pool,
issue #22): the SDK's pool is 4 wide, and our reads wait on SSH."""

from __future__ import annotations

import threading
from concurrent import futures
from importlib import util
from pathlib import Path

from components.provider_server import SERVER_WORKERS, widen_server_pool


def test_a_pool_of_4_runs_the_calls_side_by_side_once_widened() -> None:
    pool = futures.ThreadPoolExecutor(max_workers=4)
    try:
        assert widen_server_pool() >= 1
        calls = 12  # a refresh of the lab stack's dynamic resources, each waiting on SSH
        together = threading.Barrier(calls, timeout=10)
        done = [pool.submit(together.wait) for _ in range(calls)]  # breaks (timeout) unless all run at once
        assert sorted(f.result(timeout=20) for f in done) == list(range(calls))
    finally:
        pool.shutdown()


def test_a_wider_pool_is_left_as_it_is() -> None:
    pool = futures.ThreadPoolExecutor(max_workers=SERVER_WORKERS * 2)
    try:
        widen_server_pool()
        assert pool._max_workers == SERVER_WORKERS * 2
    finally:
        pool.shutdown()


def test_the_sdks_server_still_makes_its_pool_4_wide() -> None:
    """If a later SDK serves otherwise, widen_server_pool finds nothing to widen: look again then."""
    spec = util.find_spec("pulumi.dynamic")
    assert spec is not None and spec.origin is not None
    server = Path(spec.origin).with_name("__main__.py").read_text()
    assert "futures.ThreadPoolExecutor(max_workers=4)" in server


def test_calls_already_waiting_get_threads_so_a_later_quick_call_is_not_stuck_behind_them() -> None:
    """A refresh sends its first reads at once: 4 run, the rest wait in the pool's queue when our
    code (loaded by the first read) widens it. A Diff sent after them must run at once."""
    pool = futures.ThreadPoolExecutor(max_workers=4)
    release = threading.Event()
    try:
        reads = [pool.submit(release.wait, 10) for _ in range(8)]  # 4 running, 4 waiting in the queue
        widen_server_pool()
        diff = pool.submit(lambda: "diffed")
        assert diff.result(timeout=2) == "diffed"  # without a thread per waiting read, it waits for a read to end
        assert not any(read.done() for read in reads)
    finally:
        release.set()
        pool.shutdown()
