"""Configs: validation, rule matching, round trips, and errors raised before the model is touched."""

from __future__ import annotations

import json

import pytest
import torch
from model_helpers import SeqModel, assert_same, mlp, snapshot
from torch import nn

import dtypelab as dl
from dtypelab.model import LAYER_KINDS, LayerPlan, QuantConfig, resolve
from dtypelab.schemes import Scheme

CONFIG = {
    "weights": "posit(6,1)/channel/log2-hist",
    "activations": "posit(8,1)",
    "activation_scales": "static",
    "layers": [
        {"match": "Embedding", "weights": "int8/channel/absmax"},
        {"match": "re:attn.*", "activations": None, "activation_scales": "dynamic"},
        {"match": "head", "weights": "int8/channel/absmax"},
    ],
}


def test_resolve_covers_every_quantizable_layer_once():
    """Every Linear/Conv/Embedding/MHA gets one plan; MHA's out_proj belongs to the MHA plan, not its own."""
    plans = resolve(SeqModel(), CONFIG)
    assert list(plans) == ["emb", "conv", "attn", "head"]
    assert [p.kind for p in plans.values()] == ["Embedding", "Conv1d", "MultiheadAttention", "Linear"]
    assert all(isinstance(p, LayerPlan) for p in plans.values())
    assert plans["emb"].activation is None  # its inputs are indices
    assert str(plans["conv"].weight) == "posit(6,1)/channel/log2-hist"
    assert str(plans["conv"].activation) == "posit(8,1)/tensor/none" and not plans["conv"].dynamic
    assert plans["attn"].activation is None and plans["attn"].dynamic
    assert str(plans["head"].weight) == "int8/channel/absmax"


def test_plans_are_frozen():
    plan = resolve(mlp(), {"weights": "int8"})["0"]
    with pytest.raises(AttributeError):
        plan.weight = None


def test_later_rules_win_and_none_keeps_fp32():
    m = mlp()
    plans = resolve(m, {"weights": "int8", "activations": "int8/tensor/absmax",
                        "layers": [{"match": "*", "weights": "e4m3"}, {"match": "4", "weights": None},
                                   {"match": "type:Linear", "activations": "fp32"}]})
    assert [str(p.weight) for p in plans.values()] == ["e4m3/tensor/none", "e4m3/tensor/none", "None"]
    assert all(p.activation is None for p in plans.values())
    assert not plans["4"].quantized


def test_scheme_objects_and_strings_are_the_same_config():
    a = QuantConfig.coerce({"weights": Scheme(format="int8", granularity="channel", scale="pow2")})
    b = QuantConfig.coerce({"weights": "INT8 / channel / pow2"})
    assert a == b and a.weights == "int8/channel/pow2"


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".toml"])
def test_config_round_trips_through_files(tmp_path, suffix):
    """A config written and read back is the same config (rules keep exactly the fields they set)."""
    cfg = QuantConfig.coerce(CONFIG)
    path = tmp_path / f"cfg{suffix}"
    if suffix == ".yaml":
        cfg.to_yaml(path)
    elif suffix == ".json":
        cfg.to_json(path)
    else:  # TOML has no null: write the same config without None fields
        cfg = QuantConfig.coerce({"weights": "int8/channel/pow2", "activation_scales": "dynamic",
                                  "layers": [{"match": "conv", "weights": "e2m1/block:32/absmax"}]})
        path.write_text('weights = "int8/channel/pow2"\nactivation_scales = "dynamic"\n'
                        '[[layers]]\nmatch = "conv"\nweights = "e2m1/block:32/absmax"\n')
    back = QuantConfig.coerce(path)
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()
    assert QuantConfig.coerce(json.loads(cfg.to_json())) == cfg
    assert resolve(SeqModel(), back).keys() == resolve(SeqModel(), cfg).keys()


def test_config_round_trip_keeps_unset_versus_none():
    cfg = QuantConfig.coerce({"weights": "int8", "layers": [{"match": "0", "activations": None}]})
    assert cfg.to_dict()["layers"] == [{"match": "0", "activations": None}]


BAD = [
    ({"layers": [{"match": "nothing.here", "weights": "int8"}]}, "matches no quantizable layer"),
    ({"layers": [{"match": "Lniear", "weights": "int8"}]}, "not a layer type either"),
    ({"layers": [{"match": "type:Lniear", "weights": "int8"}]}, "unknown layer type 'Lniear'"),
    ({"layers": [{"match": "re:([", "weights": "int8"}]}, "bad regular expression"),
    ({"weights": "posit(6)"}, "does not parse"),
    ({"activations": "int8/rows/absmax"}, "does not parse"),
    ({"weights": "int8", "wieghts": "int8"}, "wieghts"),
    ({"activation_scales": "sometimes"}, "activation_scales"),
    ({"activations": "e4m3/block:32/mx"}, "activation_scales: dynamic"),
    ({"weights": "int8", "activations": "int8/tensor/pow2", "bias": "int32",
      "layers": [{"match": "Embedding", "weights": None}]}, "bias: int32"),
    ({"layers": [{"match": "emb", "weights": "int4"}, {"match": "head", "weights": "int8"}]}, "tied"),
]


@pytest.mark.parametrize(("config", "message"), BAD)
def test_bad_configs_raise_before_anything_changes(config, message):
    """Each bad config is a ValueError naming the problem, and the model is untouched afterwards."""
    m = SeqModel()
    snap = snapshot(m)
    with pytest.raises(ValueError, match=message):
        dl.quantize_model(m, config, calibration=[torch.randint(0, 40, (2, 5))])
    assert_same(m, snap)


def test_unknown_type_error_lists_the_valid_types():
    with pytest.raises(ValueError) as e:
        resolve(mlp(), {"layers": [{"match": "type:GRU", "weights": "int8"}]})
    assert all(name in str(e.value) for name in LAYER_KINDS)


def test_layer_kinds_registry_drives_resolution():
    """Every registered kind is found by a type rule on a model holding one of it (GPT-2's Conv1D registered
    here, as the language-model workloads do, so that the registry is the same whatever ran before)."""
    from transformers.pytorch_utils import Conv1D

    from dtypelab.workloads.lm import register_conv1d

    register_conv1d()
    makers = {"Linear": lambda: nn.Linear(2, 2), "Conv1d": lambda: nn.Conv1d(2, 2, 1),
              "Conv2d": lambda: nn.Conv2d(2, 2, 1), "Embedding": lambda: nn.Embedding(3, 2),
              "MultiheadAttention": lambda: nn.MultiheadAttention(4, 1), "Conv1D": lambda: Conv1D(2, 2)}
    assert set(makers) == set(LAYER_KINDS)
    for name, make in makers.items():
        plans = resolve(nn.ModuleDict({"x": make()}), {"layers": [{"match": name, "weights": "int8"}]})
        assert [p.kind for p in plans.values()] == [name]
        assert str(plans["x"].weight) == "int8/tensor/none"
