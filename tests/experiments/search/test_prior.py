"""The sensitivity ranking as the search's prior: feasible seeds that favour the sensitive layers, read from a
sensitivity run, and put in the GA's first population."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_layers import AttnWorkload

from dtypelab.experiments.search import GASettings, search
from dtypelab.experiments.search.prior import load_ranking, prior_seeds
from dtypelab.experiments.search.problem import build_problem
from dtypelab.experiments.search.run import _prior_seeds


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 50), min_size=1, max_size=5), min_size=1, max_size=6),
       st.floats(0.0, 1.0), st.randoms(use_true_random=False))
def test_seeds_fit_the_budget_and_favour_the_most_sensitive(option_costs, slack, rnd):
    costs = [sorted(set(c)) for c in option_costs]
    layers = [f"l{i}" for i in range(len(costs))]
    ranking = list(layers)
    rnd.shuffle(ranking)
    cheapest, dearest = sum(c[0] for c in costs), sum(c[-1] for c in costs)
    budget = cheapest + slack * (dearest - cheapest)
    seeds = prior_seeds(ranking, layers, costs, budget)
    assert seeds and len(set(seeds)) == len(seeds)
    for g in seeds:
        assert sum(costs[i][o] for i, o in enumerate(g)) <= budget + 1e-9
        # no cheaper step up is left for the most sensitive layer that is not at its dearest option
        top = layers.index(ranking[0])
        if g[top] + 1 < len(costs[top]):
            assert sum(costs[i][o] for i, o in enumerate(g)) + costs[top][g[top] + 1] - costs[top][g[top]] > budget


def test_ranking_decides_who_gets_the_bits():
    costs = [[1, 2, 4]] * 3
    assert prior_seeds(["c", "b", "a"], ["a", "b", "c"], costs, 8)[0] == (1, 1, 2)
    assert prior_seeds(["a", "b", "c"], ["a", "b", "c"], costs, 8)[0] == (2, 1, 1)
    with pytest.raises(ValueError, match="none of the searched layers"):
        prior_seeds(["x"], ["a", "b", "c"], costs, 8)


def test_load_ranking_from_a_run_directory_and_errors(tmp_path):
    (tmp_path / "sensitivity.json").write_text(json.dumps({"rows": [{"layer": "head"}, {"layer": "inp"}]}))
    assert load_ranking(tmp_path) == load_ranking(tmp_path / "sensitivity.json") == ["head", "inp"]
    assert load_ranking(["a"]) == ["a"]
    with pytest.raises(ValueError, match="sensitivity ranking"):
        load_ranking(tmp_path / "missing")
    with pytest.raises(TypeError, match="prior"):
        load_ranking(3)


def test_search_seeds_its_population_from_the_prior(tmp_path):
    wl = AttnWorkload()
    space = ["posit(4,1)/tensor/log2-hist", "posit(6,1)/tensor/log2-hist", "int8/tensor/absmax"]
    ranking = ["head", "inp", "attn"]
    seeded = search(wl, space=space, budget=6.0, settings=GASettings(population=4, generations=1),
                    executor="serial", prior=ranking, out_dir=tmp_path, pareto_points=1)
    assert json.loads((tmp_path / "search.json").read_text())["prior"] == ranking
    problem = build_problem(wl, space, [None])
    want = _prior_seeds(problem, ranking, problem.gene_costs(), 6.0 * sum(problem.numel))
    first = [tuple(g) for g, _ in json.loads((tmp_path / "checkpoint.json").read_text())["scored"]]
    assert want and set(want[:4]) <= set(first)  # the ranking's seeds are in the first population
    assert seeded.best.bits_per_weight <= 6.0
