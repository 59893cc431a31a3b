"""How the HA manager scores the nodes a service may start on: datacenter.cfg's `crs: ha=basic|static`
(pve-cluster DataCenterConfig.pm $crs_format), after pve-ha-manager's Usage/Basic.pm (the number
of services per node) and Usage/Static.pm, whose scoring is proxmox-resource-scheduling's
pve_static.rs and topsis.rs (the Rust crate behind PVE::RS::ResourceScheduling::Static).

Static: each node's load is the sum of the configured CPUs and memory of the services on it (or
moving to it: Usage.pm get_used_service_nodes); for each candidate node, the cluster's loads as
if the service ran there give four criteria, all to be minimised, with the weights 1, 2, 5 and
10: the average and the highest CPU load, the average and the highest memory load (each load a
fraction of the node's CPUs or memory). TOPSIS ranks them: every criterion's column divided by
its L2 norm, the weighted Euclidean distance to the best and to the worst value of each column,
the score the distance to the worst over the sum of both (0 when both are 0). A higher score is
better; select_service_node sorts by its negative, then by name. `dynamic` (PVE >= 9.1, the
measured usage) is not modelled: it scores as `static`."""

from __future__ import annotations

import math
from typing import Any

WEIGHTS = (1.0, 2.0, 5.0, 10.0)  # average CPU, highest CPU, average memory, highest memory: all minimised


def crs_option(datacenter: dict[str, str], name: str) -> str | None:
    """One part of datacenter.cfg's `crs` property string, None when unset."""
    for item in str(datacenter.get("crs") or "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == name and value.strip():
            return value.strip()
    return None


def crs_mode(datacenter: dict[str, str]) -> str:
    """datacenter.cfg `crs: ha=...`; PVE's default `basic`."""
    return crs_option(datacenter, "ha") or "basic"


def rebalance_on_start(datacenter: dict[str, str]) -> bool:
    """datacenter.cfg `crs: ha-rebalance-on-start=<bool>` (Manager.pm update_crs_scheduler_mode), off by default."""
    return (crs_option(datacenter, "ha-rebalance-on-start") or "0").lower() in ("1", "true", "yes", "on")


def service_usage(config: dict[str, Any]) -> tuple[float, int]:
    """A VM's static usage (Resources/PVEVM.pm get_static_stats): its CPUs (cpulimit when set,
    else sockets x cores) and its memory in bytes."""
    cpus = float(config.get("cpulimit") or 0) or float(int(config.get("sockets") or 1) * int(config.get("cores") or 1))
    memory = int(str(config.get("memory") or 512).split(",")[0].split("=")[-1]) * 1024 * 1024
    return cpus, memory


def topsis(matrix: list[list[float]]) -> list[float]:
    """topsis.rs score_alternatives with the static criteria: a score in 0..1 per row, higher better."""
    if not matrix:
        return []
    total = sum(WEIGHTS)
    weights = [w / total for w in WEIGHTS]
    columns = list(zip(*matrix, strict=True))
    norms = [math.sqrt(sum(v * v for v in col)) for col in columns]
    rows = [[v / norms[i] if norms[i] else v for i, v in enumerate(row)] for row in matrix]
    best = [min(col) for col in zip(*rows, strict=True)]
    worst = [max(col) for col in zip(*rows, strict=True)]
    scores = []
    for row in rows:
        to_best = math.sqrt(sum((weights[i] * (v - best[i])) ** 2 for i, v in enumerate(row)))
        to_worst = math.sqrt(sum((weights[i] * (v - worst[i])) ** 2 for i, v in enumerate(row)))
        scores.append(to_worst / (to_best + to_worst) if to_best + to_worst else 0.0)
    return scores


def static_scores(capacity: dict[str, tuple[int, int]], load: dict[str, list[float]], service: tuple[float, int]) -> dict[str, float]:
    """pve_static.rs score_nodes_to_start_service over the online nodes: CAPACITY node -> (CPUs,
    memory bytes), LOAD node -> [CPUs, memory bytes] of the services there; the score per node
    (select_service_node's order: lower first, so the TOPSIS score negated)."""
    nodes = sorted(capacity)
    matrix = []
    for target in nodes:
        cpu = [(load[n][0] + ((service[0] or capacity[n][0]) if n == target else 0.0)) / capacity[n][0] for n in nodes]
        mem = [(load[n][1] + (service[1] if n == target else 0)) / capacity[n][1] for n in nodes]
        matrix.append([sum(cpu) / len(nodes), max(cpu), sum(mem) / len(nodes), max(mem)])
    return {node: -score for node, score in zip(nodes, topsis(matrix), strict=True)}
