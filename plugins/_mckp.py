"""Exact multiple-choice knapsack: pick one option per group, total cost within a budget, total value maximal.

Used to spend a DReLU budget across channels: each group is a channel, each option a patch size whose
cost is a DReLU count and whose value is minus the distortion it causes.

A dynamic program over cost is exact but costs groups x options x budget steps, far too many for a
ResNet-18 (about 4k groups, 80 options, a 35k budget). Three exact reductions shrink it first:

1. Within a group only the Pareto front can be optimal: of equal-cost options the most valuable
   stays, and an option no cheaper and no better than another is dropped.
2. Lagrangian variable fixing: relaxing the budget with the multiplier lambda of the LP relaxation
   gives an upper bound on the optimum, rounding the relaxed choice gives a feasible lower bound,
   and an option whose forced upper bound falls below that lower bound is in no optimal selection.
   The LP relaxation of these instances is nearly integral, so groups keep only a few options.
3. Each group's cheapest surviving cost is paid up front, so the program runs over the slack left
   after it, and groups with small cost ranges go first so the reachable range grows slowly.

The program then stores, per group and reachable cost, the option that reaches the best value, and
walks those back from the best final cost. Ties go to the cheaper option and the lower total cost.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def solve_mckp(costs: Sequence[Sequence[int]] | np.ndarray, values: Sequence[Sequence[float]] | np.ndarray,
               budget: int) -> np.ndarray:
    """Index, into each group's options, of the option chosen for that group, as int64 of length G.

    ``costs`` and ``values`` are ragged per-group sequences or padded (G, K) arrays; an option valued
    ``-inf`` or costing more than ``budget`` is never chosen. Raises ``ValueError`` when nothing fits.
    """
    cost, value = _padded(costs, values, budget)
    if len(cost) == 0:
        return np.zeros(0, np.int64)
    index = np.broadcast_to(np.arange(cost.shape[1]), cost.shape)
    if not np.isfinite(value).any(axis=1).all():
        raise ValueError(f"group {np.flatnonzero(~np.isfinite(value).any(axis=1))[0]} has no option within "
                         f"the budget {budget}")
    cost, value, index = _pareto_front(cost, value, index)
    floor = int(cost[:, 0].sum())
    if floor > budget:
        raise ValueError(f"no selection fits the budget: the cheapest options already cost {floor} > budget {budget}")
    cost, value, index = _compact(cost, value, index, _may_be_optimal(cost, value, budget))
    floor = cost[:, 0]
    pick = _dynamic_program(cost - floor[:, None], value, budget - int(floor.sum()))
    return index[np.arange(len(index)), pick].astype(np.int64)


def _padded(costs, values, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """(G, K) int64 costs and float64 values, with -inf for padding and options over the budget."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        cost, value = np.asarray(costs, dtype=np.int64), values.astype(np.float64)
    else:
        width = max(map(len, values), default=0)
        cost, value = np.zeros((len(values), width), np.int64), np.full((len(values), width), -np.inf)
        for g, (c, v) in enumerate(zip(costs, values, strict=True)):
            if len(c) != len(v):
                raise ValueError(f"group {g} has {len(c)} costs but {len(v)} values")
            cost[g, :len(c)], value[g, :len(v)] = c, v
    if cost.shape != value.shape:
        raise ValueError(f"costs {cost.shape} and values {value.shape} differ in shape")
    if np.isnan(value).any() or (value == np.inf).any() or (cost[np.isfinite(value)] < 0).any():
        raise ValueError("values must be finite or -inf, and the costs of usable options non-negative")
    return cost, np.where(cost > budget, -np.inf, value)


def _pareto_front(cost, value, index):
    """Each group's options that are strictly better than every cheaper (or equal-cost, earlier) one."""
    order = np.lexsort((-value, cost), axis=1)
    cost, value, index = (np.take_along_axis(a, order, axis=1) for a in (cost, value, index))
    before = np.maximum.accumulate(value, axis=1)[:, :-1]
    better = value > np.concatenate([np.full((len(value), 1), -np.inf), before], axis=1)
    return _compact(cost, value, index, better)


def _compact(cost, value, index, keep):
    """Moves each group's kept options, in order, to the front of its row and drops empty columns."""
    order = np.argsort(~keep, axis=1, kind="stable")[:, :keep.sum(axis=1).max()]
    cost, value, index, keep = (np.take_along_axis(a, order, axis=1) for a in (cost, value, index, keep))
    return cost, np.where(keep, value, -np.inf), index


def _may_be_optimal(cost, value, budget: int) -> np.ndarray:
    """False for options proven absent from every optimal selection (options sorted by cost, cheapest first).

    For any lambda >= 0, sum_g max_k(value - lambda*cost) + lambda*budget bounds the optimum from above,
    and forcing option k into group g lowers that bound by its reduced cost. Bisection brackets the
    LP multiplier between a lambda whose relaxed choice overspends and one whose choice fits."""
    rows = np.arange(len(cost))

    def relaxed(lam: float) -> np.ndarray:
        return np.argmax(value - lam * cost, axis=1)

    def over(lam: float) -> bool:
        return cost[rows, relaxed(lam)].sum() > budget

    low, high = 0.0, 0.0
    if over(high):
        high = 1.0
        while over(high):
            low, high = high, 2 * high
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if over(mid) else (low, mid)
    # Groups whose relaxed choice changes between low and high move to their pricier choice while it fits
    # (the clip only guards against rounding: the choice at low never costs less).
    cheap, dear = relaxed(high), relaxed(low)
    extra = np.cumsum(np.maximum(cost[rows, dear] - cost[rows, cheap], 0))
    feasible = np.where(extra <= budget - cost[rows, cheap].sum(), dear, cheap)
    reduced = value - high * cost
    best = reduced.max(axis=1)
    upper = best.sum() + high * budget
    lower = value[rows, feasible].sum()
    rounding = 1e-9 * (np.abs(best).sum() + high * budget + abs(lower))
    return best[:, None] - reduced <= upper - lower + rounding


def _dynamic_program(cost, value, budget: int) -> np.ndarray:
    """Column of the optimal option per group; every group's column 0 costs 0."""
    usable = np.isfinite(value) & (cost <= budget)
    order = np.argsort(np.where(usable, cost, 0).max(axis=1), kind="stable")
    best = np.zeros(1)  # best[b]: best value of the groups so far at total cost exactly b
    choices = []
    for g in order:
        options = np.flatnonzero(usable[g])
        if len(options) == 1:
            choices.append(None)
            continue
        size = min(budget, len(best) - 1 + cost[g, options[-1]]) + 1
        new, choice = np.full(size, -np.inf), np.zeros(size, np.min_scalar_type(options[-1]))
        for k in options.tolist():
            c = cost[g, k]
            reach = min(len(best), size - c)
            candidate = best[:reach] + value[g, k]
            better = candidate > new[c:c + reach]
            np.copyto(new[c:c + reach], candidate, where=better)
            np.copyto(choice[c:c + reach], k, where=better)
        best = new
        choices.append(choice)
    pick = np.zeros(len(cost), np.int64)
    spent = int(np.argmax(best))
    for g, choice in zip(order[::-1], choices[::-1]):
        if choice is not None:
            pick[g] = choice[spent]
            spent -= cost[g, pick[g]]
    return pick
