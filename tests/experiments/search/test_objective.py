"""The global-local contrastive objective and option pruning."""

import pytest
import torch

from dtypelab.experiments.search.objective import Objective, info_nce, relative_error
from dtypelab.experiments.search.space import energy_centre, pareto_options, weight_options


def test_info_nce_prefers_matching_representations():
    torch.manual_seed(0)
    f = torch.randn(32, 16)
    close = f + 0.01 * torch.randn_like(f)
    shuffled = f[torch.randperm(32)]
    assert info_nce(f, f) < info_nce(close, f) + 1e-6 < info_nce(shuffled, f)
    # equals cross-entropy of the cosine-similarity logits at temperature 0.1
    q, k = torch.nn.functional.normalize(close.double(), dim=1), torch.nn.functional.normalize(f.double(), dim=1)
    expected = torch.nn.functional.cross_entropy(q @ k.T / 0.1, torch.arange(32))
    assert float(info_nce(close, f)) == pytest.approx(float(expected), rel=1e-12)


def test_objective_terms_and_ablations():
    torch.manual_seed(1)
    f = torch.randn(16, 8)
    q = f + 0.3 * torch.randn_like(f)
    local = [0.5, 0.1]
    both = Objective()(q, f, local)
    g = Objective(local_weight=0)(q, f, local)
    loc = Objective(global_weight=0)(q, f, local)
    assert loc == pytest.approx(0.3) and g > 0 and both == pytest.approx(g + loc)
    assert Objective()(f, f, [0.0]) == pytest.approx(0.0, abs=1e-12)
    assert [Objective(local_weight=0).name, Objective(global_weight=0).name] == ["global", "local"]
    assert Objective(2, 2).name == "global+local" and Objective(2, 0.5).name == "2*global+0.5*local"
    with pytest.raises(ValueError, match="not both 0"):
        Objective(0, 0)


def test_relative_error():
    y = torch.tensor([3.0, 4.0])
    assert relative_error(y, y) == 0.0 and relative_error(torch.zeros(2), y) == 1.0


def test_pareto_options_drop_dominated():
    costs = [1, 2, 2, 3, 4]
    errors = [0.9, 0.5, 0.7, 0.6, 0.1]
    assert pareto_options(costs, errors) == [0, 1, 4]


def test_lp_space_centres_sf_on_weight_energy():
    w = torch.full((10,), 2.0**-5)
    assert energy_centre(w) == -5.0
    sfs = {s.format.sf for s in weight_options("lp", w)}
    assert sfs == {4.0, 5.0, 6.0}
    with pytest.raises(ValueError, match="valid: lp, posit"):
        weight_options("nope", w)
