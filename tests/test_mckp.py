"""The exact multiple-choice knapsack solver: optimal against brute force, and fast on a ResNet-18-sized instance."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from benchbed_plugins._mckp import solve_mckp

# Small integers make ties in value common; -inf marks an option that may not be chosen.
VALUES = st.one_of(st.integers(-5, 5).map(float), st.floats(-100, 100), st.just(-math.inf))
GROUPS = st.lists(st.lists(st.tuples(st.integers(0, 10), VALUES), min_size=1, max_size=5), min_size=1, max_size=5)


def brute_force(costs, values, budget: int) -> float | None:
    """Best total value over every selection within the budget, or None when none fits."""
    totals = [sum(values[g][k] for g, k in enumerate(pick)) for pick in itertools.product(*map(range, map(len, costs)))
              if sum(costs[g][k] for g, k in enumerate(pick)) <= budget]
    return max((t for t in totals if t > -math.inf), default=None)


def split(groups):
    return [[c for c, _ in g] for g in groups], [[v for _, v in g] for g in groups]


def check_solution(pick, costs, values, budget: int, best: float):
    assert pick.dtype == np.int64 and pick.shape == (len(costs),)
    assert all(0 <= k < len(c) for k, c in zip(pick, costs))
    assert sum(costs[g][k] for g, k in enumerate(pick)) <= budget
    assert sum(values[g][k] for g, k in enumerate(pick)) == pytest.approx(best, rel=1e-9, abs=1e-9)


@settings(max_examples=400, deadline=None)
@given(GROUPS, st.integers(0, 30))
# Variable fixing drops group 0's cheapest option, leaving its dearest over the remaining slack.
@example([[(2, -4.0), (8, -1.0), (10, -4.0)], [(3, 1.0), (5, 2.0), (0, -4.0)]], 9)
def test_optimal_against_brute_force(groups, budget):
    costs, values = split(groups)
    best = brute_force(costs, values, budget)
    if best is None:
        with pytest.raises(ValueError):
            solve_mckp(costs, values, budget)
    else:
        check_solution(solve_mckp(costs, values, budget), costs, values, budget, best)


@settings(max_examples=200, deadline=None)
@given(GROUPS, st.integers(0, 30), st.integers(0, 3), st.data())
def test_padded_arrays_never_choose_padding(groups, budget, extra, data):
    costs, values = split(groups)
    best = brute_force(costs, values, budget)
    width = max(map(len, costs)) + extra
    # Padding is either valued -inf at any cost, or priced over the budget at a tempting value.
    pad = data.draw(st.lists(st.tuples(st.integers(0, 50), st.just(-math.inf)) | st.tuples(
        st.integers(budget + 1, 60), st.just(1e6)), min_size=len(groups) * width, max_size=len(groups) * width))
    cost_array, value_array = np.array(pad, dtype=float).reshape(len(groups), width, 2).transpose(2, 0, 1)
    for g, (c, v) in enumerate(zip(costs, values)):
        cost_array[g, :len(c)], value_array[g, :len(v)] = c, v
    cost_array = cost_array.astype(np.int64)
    if best is None:
        with pytest.raises(ValueError):
            solve_mckp(cost_array, value_array, budget)
        return
    pick = solve_mckp(cost_array, value_array, budget)
    check_solution(pick, costs, values, budget, best)
    assert np.array_equal(pick, solve_mckp(costs, values, budget)), "padding changed how ties were broken"


def test_infeasible_instances_raise():
    with pytest.raises(ValueError, match="cheapest options already cost 6 > budget 5"):
        solve_mckp([[2, 3], [4, 7]], [[0.0, 1.0], [0.0, 1.0]], 5)
    with pytest.raises(ValueError, match="group 1 has no option"):
        solve_mckp([[0], [9, 1]], [[0.0], [1.0, -math.inf]], 5)


def test_equal_costs_keep_the_most_valuable():
    costs = [[3, 3, 3, 0], [1, 0]]
    values = [[-4.0, -1.0, -2.0, -9.0], [-1.0, -5.0]]
    assert solve_mckp(costs, values, 3).tolist() == [1, 1]
    assert solve_mckp(costs, values, 4).tolist() == [1, 0]


def test_ties_are_broken_the_same_way_every_time():
    costs, values = [[0, 1, 2]] * 6, [[0.0, 1.0, 2.0]] * 6
    picks = {tuple(solve_mckp(costs, values, 5)) for _ in range(3)}
    assert len(picks) == 1 and sum(map(sum, picks)) == 5


SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 16, 32)
LAYERS = ((32, 320), (16, 512), (8, 1024), (4, 2048))  # (map side, channels): ResNet-18 on CIFAR, 3,904 channels


@pytest.fixture(scope="module")
def resnet18_instance():
    """One group per channel; options are identity (0 DReLUs) and every (h, w) patch of SIZES that fits the
    map, costing ceil(H/h)*ceil(W/w) DReLUs (101, 82, 65 and 17 options at 32, 16, 8 and 4 px). Distortion
    falls as the cost grows, scaled per channel and noisy; identity distorts most."""
    rng = np.random.default_rng(0)
    costs, values = [], []
    for side, channels in LAYERS:
        sizes = [s for s in SIZES if s <= side]
        cost = np.array([math.ceil(side / h) * math.ceil(side / w) for h in sizes for w in sizes])
        for _ in range(channels):
            distortion = rng.lognormal() * np.sqrt(side * side / cost) * rng.lognormal(0, 0.3, cost.size)
            costs.append([0, *cost.tolist()])
            values.append([-1.5 * distortion.max(), *(-distortion).tolist()])
    return costs, values, 34_816


@pytest.mark.benchmark(group="mckp")
def test_solver_resnet18_sized(benchmark, resnet18_instance):
    costs, values, budget = resnet18_instance
    pick = benchmark.pedantic(solve_mckp, args=(costs, values, budget), rounds=3, iterations=1)
    assert pick.shape == (3904,)
    assert all(0 <= k < len(c) for k, c in zip(pick, costs))
    assert sum(c[k] for k, c in zip(pick, costs)) <= budget
