"""Import graphs, for the layout tests (lab/tests/test_pve_layout.py, tests/unit/test_layout.py):
a cycle between modules, if there is one."""

from __future__ import annotations


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of EDGES (module -> the modules it imports) as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None
