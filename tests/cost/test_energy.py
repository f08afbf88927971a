"""Energy model: the lab's worked example exactly, attention counted, tables overridden and validated."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dtypelab as dl
from dtypelab.cost import LAB_TABLE, energy, load_table
from dtypelab.cost.pricing import OPERANDS, datapath

INT8_LAB = {"weights": "int8/tensor/pow2", "activations": "uint8/tensor/pow2"}


@pytest.fixture
def lab_layer():
    torch.manual_seed(0)
    return nn.Linear(128, 10), torch.rand(1, 128)


def test_lab_example_fp32_is_5879_pj(lab_layer):
    """Seed 004: 1280 FP32 multiplies (3.7) + 1270 FP32 adds (0.9) = 5879 pJ, bias not counted."""
    layer, x = lab_layer
    r = energy(layer, None, example=x, accounting="lab")
    assert r.total_pj == 5879.0
    assert r.by_op() == {"fp32 mul": (1280, 4736.0), "fp32 add": (1270, 1143.0)}


def test_lab_example_int8_pow2_is_383_4_pj(lab_layer):
    """Seed 004: 1280 INT8 mul (256) + 1270 INT32 add (127) + 10 INT8 bias adds (0.3) + 10 shifts (0.1)."""
    layer, x = lab_layer
    r = energy(layer, INT8_LAB, example=x, accounting="lab")
    assert r.total_pj == 383.4
    assert r.by_op() == {"int8 mul": (1280, 256.0), "int32 add": (1270, 127.0), "int8 add": (10, 0.3),
                         "shift": (10, 0.1)}


def test_full_accounting_adds_the_terms_the_lab_left_out(lab_layer):
    """Full = lab + bias at the accumulator width + 128 zero-point subtractions of the uint8 input."""
    layer, x = lab_layer
    fp32 = energy(layer, None, example=x)
    assert fp32.by_term() == {"mul": 4736.0, "acc": 1143.0, "bias": 9.0}
    q = energy(layer, INT8_LAB, example=x)
    assert q.by_term() == {"mul": 256.0, "acc": 127.0, "bias": 1.0, "zero_point": 3.84, "rescale": 0.1}
    assert q.total_pj == 387.94


def test_energy_scales_with_batch(lab_layer):
    """Every term is per output or per product: batch 4 costs exactly 4x batch 1."""
    layer, x = lab_layer
    one = energy(layer, INT8_LAB, example=x, accounting="lab").total_pj
    four = energy(layer, INT8_LAB, example=x.repeat(4, 1), accounting="lab").total_pj
    assert four == pytest.approx(4 * one, rel=1e-12)


def test_attention_matmuls_of_multihead_attention_are_counted():
    """nn.MultiheadAttention: q/k/v/out projections and both attention products (Q K^T, A V), per head."""
    batch, length, emb, heads = 2, 7, 16, 2
    mha = nn.MultiheadAttention(emb, heads, batch_first=True).eval()
    x = torch.randn(batch, length, emb)
    r = energy(mha, {"weights": "int8/tensor/pow2", "activations": "int8/tensor/pow2"}, example=(x, x, x))
    (row,) = r.rows
    proj = 4 * batch * length * emb * emb
    attn = 2 * batch * heads * length * length * (emb // heads)
    assert row.macs == proj + attn
    assert "mha Q·K^T" in row.ops and "mha A·V" in row.ops
    assert r.by_op()["int8 mul"][0] == proj + attn  # the attention products run in the layer's int8


def test_sdpa_and_matmul_outside_planned_layers_are_fp32():
    """A hand-written attention (matmul + SDPA) in an unplanned module is counted, in FP32."""

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            a = (q @ k.transpose(-1, -2)).softmax(-1) @ v
            return a + torch.nn.functional.scaled_dot_product_attention(q, k, v)

    x = torch.randn(3, 5, 8)
    r = energy(Attn(), {"weights": "int8/tensor/pow2", "activations": "int8/tensor/pow2"}, example=x)
    rows = {row.name: row for row in r.rows}
    assert rows["qkv"].macs == 3 * 5 * 24 * 8
    assert rows[""].ops == ["matmul", "sdpa Q·K^T", "sdpa A·V"]
    assert rows[""].macs == 2 * (3 * 5 * 5 * 8 + 3 * 5 * 8 * 5)
    assert {x.op for x in rows[""].lines} == {"fp32 mul", "fp32 add"}


def test_conv_counts_macs_per_output():
    conv = nn.Conv2d(3, 4, 3, padding=1, groups=1)
    r = energy(conv, None, example=torch.randn(2, 3, 6, 6), accounting="lab")
    assert r.macs == 2 * 4 * 6 * 6 * 3 * 9


def test_user_table_overrides_prices(tmp_path, lab_layer):
    """A YAML table replaces the lab's prices; a ``formats`` entry overrides a derived pair price."""
    layer, x = lab_layer
    path = tmp_path / "t.yaml"
    path.write_text("name: mine\nmul: {int8: 1.0, fp32: 2.0}\nadd: {int32: 0.5, int8: 0.25, fp32: 1.0}\n"
                    "shift: 0.125\nformats:\n  'int8*uint8': {mul: 0.5}\n")
    r = energy(layer, INT8_LAB, example=x, table=str(path), accounting="lab")
    assert r.table_name == "mine"
    assert r.total_pj == 1280 * 0.5 + 1270 * 0.5 + 10 * 0.25 + 10 * 0.125
    assert energy(layer, None, example=x, table=str(path), accounting="lab").total_pj == 1280 * 2.0 + 1270 * 1.0


def test_derived_prices_follow_the_table():
    """Widths without an entry are interpolated log-log between the nearest entries of the same kind."""
    assert LAB_TABLE.price("add", "int", 16) == 0.05
    assert LAB_TABLE.price("mul", "int", 16) == pytest.approx(0.2 * (3.1 / 0.2) ** 0.5)
    fp8 = datapath(LAB_TABLE, dl.fmt("e4m3"), dl.fmt("e4m3"))
    assert LAB_TABLE.price("mul", "fp", 8) < fp8.acc.pj * 10 and fp8.acc.name == "fp32 add"
    lp = datapath(LAB_TABLE, dl.fmt("lp(8,2,2,0)"), dl.fmt("lp(8,2,2,0)"))
    assert lp.mul.pj == LAB_TABLE.price("add", "int", 8)  # a product of logs is an add
    nf4 = datapath(LAB_TABLE, dl.fmt("nf4"), None)
    assert nf4.lookup_a is not None and nf4.mul.name == "fp32 mul"
    mine = load_table({"mul": {"int8": 0.2}, "add": {"int8": 0.03}, "shift": 0.01, "lookup": 0.001,
                       "formats": {"posit(8,1)": {"mul": 0.3, "acc": 0.2}}})
    p = datapath(mine, dl.fmt("posit(8,1)"), dl.fmt("posit(8,1)"))
    assert (p.mul.pj, p.acc.pj) == (0.3, 0.2)
    assert datapath(mine, dl.fmt("nf4"), dl.fmt("nf4")).lookup_a.pj == 0.001


@pytest.mark.parametrize("spec", ["posit(8,1)", "posit(6,1)", "lp(8,2,2,0)", "e4m3", "e5m2", "e2m1", "bf16", "fp16",
                                  "int4", "uint8", "dt8", "nf4", "codebook(-1,0,1)"])
def test_every_format_family_has_a_price(spec):
    """Each format class of the registry prices against itself and against FP32."""
    f = dl.fmt(spec)
    assert any(isinstance(f, cls) for cls in OPERANDS)
    for other in (f, None):
        dp = datapath(LAB_TABLE, f, other)
        assert dp.mul.pj > 0 and dp.acc.pj > 0


@pytest.mark.parametrize("table, message", [
    ({"mul": {"int8": 0.2}, "add": {"int8": 0.03}}, "missing field 'shift'"),
    ({"mul": {"int8": -1}, "add": {"int8": 0.03}, "shift": 0.01}, "mul.int8: must be a finite number > 0"),
    ({"mul": {"float8": 1}, "add": {"int8": 0.03}, "shift": 0.01}, "unknown key 'float8'; valid keys: intN"),
    ({"mul": {"int8": 1}, "add": {"int8": 0.03}, "shift": 0.01, "muls": {}}, "unknown field 'muls'"),
    ({"mul": {"int8": 1}, "add": {"int8": 0.03}, "shift": 0.01, "formats": {"posit(9)": {"mul": 1}}},
     "formats: bad key 'posit(9)'"),
    ({"mul": {"int8": 1}, "add": {"int8": 0.03}, "shift": 0.01, "formats": {"int8": {"mull": 1}}},
     "unknown field 'formats.int8.mull'"),
])
def test_bad_tables_raise_clear_errors(table, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_table(table)


def test_bad_table_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_table(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mul: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_table(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        load_table(bad)


def test_a_table_missing_a_kind_says_so(lab_layer):
    layer, x = lab_layer
    ints_only = {"mul": {"int8": 0.2}, "add": {"int8": 0.03, "int32": 0.1}, "shift": 0.01}
    assert energy(layer, INT8_LAB, example=x, table=ints_only, accounting="lab").total_pj == 383.4
    with pytest.raises(ValueError, match="no fp mul entry"):
        energy(layer, None, example=x, table=ints_only)


def test_bad_accounting(lab_layer):
    layer, x = lab_layer
    with pytest.raises(ValueError, match="accounting must be one of lab, full"):
        energy(layer, None, example=x, accounting="approx")


def test_model_is_not_changed(lab_layer):
    layer, x = lab_layer
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    energy(layer, INT8_LAB, example=x)
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
    assert not layer._forward_hooks and not layer._forward_pre_hooks


def test_report_table_and_dict(lab_layer):
    layer, x = lab_layer
    r = energy(nn.Sequential(layer, nn.ReLU(), nn.Linear(10, 3)), INT8_LAB, example=x)
    text = r.table()
    assert text.splitlines()[0].startswith("| layer") and "**total**" in text
    d = r.to_dict()
    assert d["total_pj"] == r.total_pj and [row["name"] for row in d["layers"]] == ["0", "2"]
