"""One test made of named steps: a stack's life (up from nothing, drift, a failover, destroy) is
one test, because each step starts where the one before it left the stack.

    def test_the_stacks_life(e2e: LabStack) -> None:
        run_steps([up_from_nothing, second_up_changes_nothing, destroy_keeps_the_pool], e2e=e2e)

Each step is a plain function named for what it checks; it gets the fixtures its parameters name,
as a pytest test does (``tmp_path`` is a folder of its own, named for the step). The steps run in
the order given; the first that fails stops the test, and its error names it (``in step 3 of 7:
drift_client_deleted``), since every later step would start from a state it does not expect.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def run_steps(steps: Sequence[Callable[..., object]], **fixtures: Any) -> None:
    """Run STEPS in order, each with the FIXTURES its parameters name."""
    for number, step in enumerate(steps, 1):
        name = step.__name__
        args = {}
        for param in inspect.signature(step).parameters:
            if param not in fixtures:
                raise TypeError(f"step {name} wants the fixture {param!r}, which the test did not pass to run_steps")
            value = fixtures[param]
            if param == "tmp_path":
                value = Path(value) / name
                value.mkdir(parents=True, exist_ok=True)
            args[param] = value
        print(f"\n  step {number} of {len(steps)}: {name}", flush=True)
        t0 = time.monotonic()
        try:
            step(**args)
        except BaseException as exc:
            exc.add_note(f"in step {number} of {len(steps)}: {name} (the steps after it did not run)")
            raise
        print(f"  step {number} done in {time.monotonic() - t0:.1f} s", flush=True)
