"""quantize_model on models people really pass: deep copies, TorchScript, meta-device models, and weights edited in
place behind autograd's back (``.data``)."""

from __future__ import annotations

import copy

import pytest
import torch
from model_helpers import SeqModel, assert_same, mlp, snapshot
from torch import nn

import dtypelab as dl
from dtypelab.model import quant_state
from dtypelab.schemes import fake_quantize

W_A = {"weights": "posit(6,1)/channel/log2-hist", "activations": "posit(8,1)/tensor/log2-energy"}


@pytest.mark.parametrize("restore_copy_first", [True, False])
def test_deep_copies_of_a_quantized_model_are_independent(restore_copy_first):
    """Restoring (or re-quantizing) a deep copy leaves the original quantized and restorable bit for bit, and the
    other way round (torch's parametrized class is shared by deepcopy: restore must not delete from it)."""
    model, x = mlp(), torch.randn(16, 8)
    snap, before = snapshot(model), model(x)
    dl.quantize_model(model, W_A, calibration=[x])
    quantized = model(x)
    twin = copy.deepcopy(model)
    first, second = (twin, model) if restore_copy_first else (model, twin)
    dl.restore(first)
    assert torch.equal(first(x), before) and quant_state(first) is None
    assert torch.equal(second(x), quantized)  # still quantized (the AttributeError came here)
    dl.restore(second)
    assert torch.equal(second(x), before)
    assert_same(model, snap)
    twin_params = snapshot(twin)["params"]  # the copy's own Parameter objects, under the same names
    assert [n for n, _ in twin_params] == [n for n, _ in snap["params"]]
    assert_same(twin, {**snap, "params": twin_params})


def test_requantizing_a_deep_copy_leaves_the_original_alone():
    model, x = SeqModel().eval(), torch.randint(0, 40, (4, 7))
    snap = snapshot(model)
    dl.quantize_model(model, {"weights": "int4/channel/absmax"})
    quantized = model(x)
    twin = copy.deepcopy(model)
    dl.quantize_model(twin, {"weights": "e2m1/tensor/absmax"})
    assert not torch.equal(twin(x), quantized)
    assert torch.equal(model(x), quantized)
    dl.restore(twin)
    dl.restore(model)
    assert_same(model, snap)


@pytest.mark.parametrize("compile_", [torch.jit.script, lambda m: torch.jit.trace(m, torch.randn(2, 8))],
                         ids=["script", "trace"])
@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_a_torchscript_model_is_refused_not_reported_empty(compile_):
    scripted = compile_(mlp())
    with pytest.raises(TypeError, match="TorchScript.*quantize the eager nn.Module"):
        dl.quantize_model(scripted, {"weights": "int4/channel/absmax"})


def test_a_non_module_is_refused():
    with pytest.raises(TypeError, match="must be a torch.nn.Module, got dict"):
        dl.quantize_model({"weight": torch.ones(2)}, {"weights": "int4"})


@pytest.mark.parametrize("edit", [
    lambda w: w.data.mul_(2),
    lambda w: w.data.__setitem__((0, 0), 123.0),
    lambda w: w.data.copy_(torch.randn_like(w)),
    lambda w: setattr(w, "data", torch.randn_like(w)),
], ids=["data.mul_", "data[0,0]=", "data.copy_", "data="])
def test_the_inference_cache_sees_in_place_edits_through_data(edit):
    """``w.data`` has its own version counter: the cached quantized weight must not outlive an edit through it."""
    scheme = "posit(6,1)/channel/log2-hist"
    model, x = mlp(), torch.randn(16, 8)
    dl.quantize_model(model, {"weights": scheme})
    w = model[0].parametrizations.weight.original
    with torch.no_grad():
        cached = model[0].weight
        assert model[0].weight is cached  # unchanged weight: the cache answers
        edit(w)
        fresh = fake_quantize(w.detach(), scheme)
        assert not torch.equal(cached, fresh)
        assert torch.equal(model[0].weight, fresh)
        ref = nn.functional.linear(x, fresh, model[0].bias)
        assert torch.equal(model[0](x), ref)


def test_the_cache_tells_apart_bit_patterns_equal_as_numbers():
    """-0.0 == 0.0, yet they are different weights for a sign-aware format: the cache compares bits."""
    scheme = "e4m3/tensor/none"
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    dl.quantize_model(lin, {"weights": scheme})
    with torch.no_grad():
        assert not torch.signbit(lin.weight[0, 0])
        lin.parametrizations.weight.original.data[0, 0] = -0.0
        assert torch.signbit(lin.weight[0, 0])


def test_a_meta_model_gives_exact_sizes_or_a_clear_error():
    """With stats (or calibration) a meta-device model raises a ValueError naming the parameter and leaves the model
    as it was; with stats=False it is quantized for sizes only, and those equal the real model's."""
    real = mlp()
    with torch.device("meta"):
        meta = mlp()
    snap_classes = [type(m) for m in meta.modules()]
    with pytest.raises(ValueError, match="'0.weight' is on the meta device.*stats=False"):
        dl.quantize_model(meta, {"weights": "int4/channel/absmax"})
    with pytest.raises(ValueError, match="meta device"):
        dl.quantize_model(meta, {"weights": "int4/channel/absmax"}, calibration=[torch.randn(2, 8)], stats=False)
    assert [type(m) for m in meta.modules()] == snap_classes and quant_state(meta) is None
    config = {"weights": "int4/channel/absmax", "activations": "int8/tensor/absmax", "activation_scales": "dynamic"}
    sized = dl.quantize_model(meta, config, stats=False)
    assert sized.size_mb == dl.quantize_model(real, config, stats=False).size_mb
    assert {n: r.weight_bits_per_param for n, r in sized.layers.items()} == \
        {n: r.weight_bits_per_param for n, r in dl.quantize_model(real, config).layers.items()}
    with pytest.raises(ValueError, match="meta device"):
        meta(torch.randn(2, 8, device="meta"))


@pytest.mark.parametrize("scheme", ["int4/tensor/absmax", "posit(8,1)", "nf4/block:64/absmax", "mxfp4"])
def test_meta_tensors_give_a_clear_error(scheme):
    x = torch.randn(4, 64, device="meta")
    for call in (dl.fake_quantize, dl.quantize):
        with pytest.raises(ValueError, match="meta device"):
            call(x, scheme)
