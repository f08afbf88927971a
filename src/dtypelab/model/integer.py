"""The lab's integer-only int8 inference (seed 004), exactly equal to its fake-quant simulation.

For a chain of Linear / Conv2d layers (with ReLU, MaxPool2d, Flatten, Dropout, Identity between them) quantized by
:func:`dtypelab.quantize_model` with power-of-two static scales, e.g. ::

    {"weights": "int8/channel/pow2", "activations": "uint8/tensor/pow2", "bias": "int32"}

:func:`convert` builds a model that computes with integers only:

* activations are UINT8 codes with zero point 128 (``x = (code - 128) * 2^-c_x``; an ``int8`` activation
  scheme is the same set of values), weights INT8 (``w = code * 2^-c_w``, ``c_w`` per tensor or per output
  channel), the bias INT32 on the accumulator grid ``2^-(c_x + c_w)``;
* each layer accumulates in INT32 (checked: an accumulator outside INT32 raises ``OverflowError``) and
  requantizes to the next layer's input scale by a shift precomputed offline:
  ``y = (ReLU(b + Σ (x - 128) · w) >> (c_x + c_w - c_y)) + 128``, saturated to [0, 255];
* the last layer's accumulator is the output, dequantized once: ``acc * 2^-(c_x + c_w)`` (float64).

``c`` counts fractional bits (scale = ``2^-c``), which is why the shift is ``c_x + c_w - c_y``.

Rounding of the shift: ``"nearest-even"`` (default) rounds to nearest, ties to even, with integer operations
only (shift, mask, compare) — exactly what the fake-quant simulation does (formats round ties to even), so the
outputs are equal bit for bit. ``"half-up"`` adds half an LSB before the shift (``(acc + 2^(s-1)) >> s``), and
``"floor"`` is the lab's bare ``>>``; both may differ from the simulation by one LSB on some elements.

MaxPool commutes with the (monotone) requantization and ReLU with zero-point codes, so both run on codes.

Example:
    >>> import torch, dtypelab as dl
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double()
    >>> x = torch.randn(16, 6, dtype=torch.float64)
    >>> _ = dl.quantize_model(net, {"weights": "int8/channel/pow2", "activations": "uint8/tensor/pow2",
    ...                             "bias": "int32"}, calibration=[x])
    >>> int_net = dl.integer.convert(net)
    >>> torch.equal(int_net(x), net(x))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dtypelab.formats import Integer
from dtypelab.model.layers import module_type, raw_weight
from dtypelab.model.quantize import BiasOnAccumulatorGrid, quant_state
from dtypelab.schemes import PerAxis, PerTensor, Scheme

ROUNDINGS = ("nearest-even", "half-up", "floor")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
PASS_MODULES = (nn.Dropout, nn.Identity)


def _frac_bits(scales: torch.Tensor, what: str) -> torch.Tensor:
    """``c`` with ``scales == 2^-c`` (int64), or ValueError if a scale is not a power of two."""
    s = scales.detach().double().reshape(-1).cpu()
    mant, exp = torch.frexp(s)
    if not bool(((mant == 0.5) & (s > 0)).all()):
        raise ValueError(f"{what}: integer-only inference needs power-of-two scales (scale: pow2), "
                         f"got {s[:4].tolist()}")
    return -(exp.long() - 1)


def _int_format(scheme: Scheme | None, what: str, signed: bool | None = None) -> Integer:
    f = scheme.format if scheme is not None else None
    if not isinstance(f, Integer) or f.n > 8 or (signed is not None and f.signed != signed):
        want = "a signed int(n), n <= 8" if signed else "an int(n) or uint(n), n <= 8"
        raise ValueError(f"{what}: integer-only inference needs {want} scheme with pow2 scales, got {scheme}")
    return f


def requantize(acc: torch.Tensor, shift: torch.Tensor, bits: int = 8, rounding: str = "nearest-even") -> torch.Tensor:
    """``clamp(round(acc / 2^shift)) + 2^(bits-1)`` as uint8 codes, with integer operations only.

    Example:
        >>> acc = torch.tensor([5, 6, 7, -6, 300])
        >>> requantize(acc, torch.tensor(2)).tolist()     # 1.25, 1.5, 1.75, -1.5, 75 -> 1, 2, 2, -2, 75
        [129, 130, 130, 126, 203]
        >>> requantize(acc, torch.tensor(2), rounding="floor").tolist()
        [129, 129, 129, 126, 203]
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding {rounding!r}; valid: {', '.join(ROUNDINGS)}")
    right = shift.clamp(min=0)
    acc = torch.bitwise_left_shift(acc, (-shift).clamp(min=0))
    q = torch.bitwise_right_shift(acc, right)
    if rounding == "nearest-even":
        rem = acc - torch.bitwise_left_shift(q, right)
        half = torch.bitwise_right_shift(torch.bitwise_left_shift(torch.ones_like(right), right), 1)
        up = (right > 0) & ((rem > half) | ((rem == half) & (torch.bitwise_and(q, 1) == 1)))
        q = q + up.long()
    elif rounding == "half-up":
        half = torch.bitwise_right_shift(torch.bitwise_left_shift(torch.ones_like(right), right), 1)
        q = torch.bitwise_right_shift(acc + half, right)
    zp = 1 << (bits - 1)
    return (q.clamp(-zp, zp - 1) + zp).to(torch.uint8)


class QuantizeInput(nn.Module):
    """float -> UINT8 codes ``clamp(round_even(x * 2^c)) + zero point`` (the one float step, at the input)."""

    def __init__(self, scheme: Scheme, frac_bits: int) -> None:
        super().__init__()
        self.scheme, self.frac_bits = scheme, int(frac_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.scheme.round_scaled(x.double() * 2.0**self.frac_bits)
        return (q + (1 << (self.scheme.format.n - 1))).to(torch.uint8)

    def extra_repr(self) -> str:
        return f"frac_bits={self.frac_bits}"


class _IntLayer(nn.Module):
    """Shared part of IntLinear / IntConv2d: INT8 weights, INT32 bias, shift, fused ReLU."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, in_bits: int, shift: torch.Tensor | None,
                 out_frac_bits: torch.Tensor | None, relu: bool, rounding: str) -> None:
        super().__init__()
        self.register_buffer("weight", weight.to(torch.int8))
        self.register_buffer("bias", bias.to(torch.int32) if bias is not None else None)
        self.register_buffer("shift", shift)  # None for the last layer (its accumulator is the output)
        self.register_buffer("out_frac_bits", out_frac_bits)  # c_x + c_w, to dequantize the last accumulator
        self.in_zero_point = 1 << (in_bits - 1)
        self.relu, self.rounding = relu, rounding

    channel_dim = -1  # where the output channel lives in the accumulator

    def accumulate(self, centred: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _channel(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return _along(t, ndim, self.channel_dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        acc = self.accumulate(codes.long() - self.in_zero_point)
        if self.bias is not None:
            acc = acc + self._channel(self.bias.long(), acc.dim())
        if acc.numel() and (int(acc.min()) < INT32_MIN or int(acc.max()) > INT32_MAX):
            raise OverflowError(f"{type(self).__name__}: an accumulator left INT32 "
                                f"([{int(acc.min())}, {int(acc.max())}])")
        if self.relu:
            acc = acc.clamp(min=0)
        if self.shift is None:
            return acc
        return requantize(acc, self._channel(self.shift, acc.dim()), rounding=self.rounding)

    def extra_repr(self) -> str:
        last = "output accumulator" if self.shift is None else f"shift={self.shift.tolist()[:4]}"
        return f"weight={tuple(self.weight.shape)}, relu={self.relu}, {last}"


class IntLinear(_IntLayer):
    def accumulate(self, centred: torch.Tensor) -> torch.Tensor:
        return _int_matmul(centred, self.weight.long().T)


def _int_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Integer matrix product. CPU: int64. Devices without integer matmul (CUDA): float64, which is exact here —
    every partial sum is an integer below 2^53 (INT32 accumulators are far inside)."""
    if a.device.type == "cpu":
        return a @ b
    return (a.double() @ b.double()).long()


class IntConv2d(_IntLayer):
    channel_dim = 1

    def __init__(self, conv: nn.Conv2d, *args: object) -> None:
        super().__init__(*args)
        bad_padding = isinstance(conv.padding, str) and conv.padding != "valid"
        if conv.groups != 1 or conv.padding_mode != "zeros" or bad_padding:
            raise ValueError(f"integer Conv2d supports groups=1, zero padding given as numbers (or 'valid'); got "
                             f"groups={conv.groups}, padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")
        self.stride, self.dilation = conv.stride, conv.dilation
        self.padding = (0, 0) if conv.padding == "valid" else conv.padding

    def accumulate(self, centred: torch.Tensor) -> torch.Tensor:
        o, c, kh, kw = self.weight.shape
        (ph, pw), (sh, sw), (dh, dw) = self.padding, self.stride, self.dilation
        x = F.pad(centred, (pw, pw, ph, ph))  # zero in the centred domain = the zero point
        cols = x.unfold(2, (kh - 1) * dh + 1, sh).unfold(3, (kw - 1) * dw + 1, sw)[..., ::dh, ::dw]
        n, _, oh, ow = cols.shape[:4]
        cols = cols.permute(0, 2, 3, 1, 4, 5).reshape(n, oh, ow, c * kh * kw)
        return _int_matmul(cols, self.weight.long().reshape(o, -1).T).permute(0, 3, 1, 2)


class CodeReLU(nn.Module):
    """ReLU on codes: ``max(code, zero point)``."""

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.clamp(min=128)


class CodeMaxPool2d(nn.Module):
    """MaxPool2d on codes (a max commutes with the monotone requantization). CPU pools the uint8 codes; devices
    without integer pooling (CUDA) pool them as float32, which holds 0..255 exactly."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.device.type == "cpu":
            return self.pool(codes)
        return self.pool(codes.float()).to(torch.uint8)


class Dequantize(nn.Module):
    """The last accumulator -> float64: ``acc * 2^-(c_x + c_w)``."""

    def __init__(self, frac_bits: torch.Tensor, channel_dim: int) -> None:
        super().__init__()
        self.register_buffer("frac_bits", frac_bits)
        self.channel_dim = channel_dim

    def forward(self, acc: torch.Tensor) -> torch.Tensor:
        return acc.double() * torch.exp2(-_along(self.frac_bits, acc.dim(), self.channel_dim).double())


def _along(t: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast along ``dim`` of an ``ndim``-tensor (a scalar if it has one value)."""
    if t.numel() == 1:
        return t.reshape(())
    shape = [1] * ndim
    shape[dim] = -1
    return t.reshape(shape)


class IntegerModel(nn.Sequential):
    """The integer-only model: float input -> codes -> INT layers -> float64 output (see the module docstring)."""


@dataclass
class _Op:
    kind: str  # "layer" | "relu" | "pool" | "flatten" | "pass"
    module: nn.Module | None = None
    args: tuple = ()
    name: str = ""


def _chain(model: nn.Module) -> list[_Op]:
    """The model's forward as a chain of ops (torch.fx), or ValueError naming what is not supported."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:
        raise ValueError(f"integer conversion traces the model with torch.fx, which failed: {e}") from e
    modules = dict(model.named_modules())
    ops: list[_Op] = []
    prev = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if prev is not None:
                raise ValueError("integer conversion needs a model with one input")
            prev = node
            continue
        if node.op == "output":
            if node.args[0] is not prev:
                raise ValueError("integer conversion needs a chain whose last op is the output")
            break
        if list(node.all_input_nodes) != [prev]:
            raise ValueError(f"integer conversion needs a plain chain of layers; {node.format_node()} is not one")
        prev = node
        if node.op == "call_module":
            m = modules[node.target]
            t = module_type(m)
            if issubclass(t, (nn.Linear, nn.Conv2d)):
                ops.append(_Op("layer", m, name=node.target))
            elif issubclass(t, nn.ReLU):
                ops.append(_Op("relu"))
            elif issubclass(t, nn.MaxPool2d):
                ops.append(_Op("pool", m))
            elif issubclass(t, nn.Flatten):
                ops.append(_Op("flatten", args=(m.start_dim, m.end_dim)))
            elif issubclass(t, PASS_MODULES):
                continue
            else:
                raise ValueError(f"integer conversion supports Linear, Conv2d, ReLU, MaxPool2d, Flatten, Dropout and "
                                 f"Identity; {node.target!r} is a {t.__name__}")
        elif node.op == "call_function" and node.target in (torch.relu, F.relu):
            ops.append(_Op("relu"))
        elif node.op == "call_function" and node.target is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            ops.append(_Op("flatten", args=(start, end)))
        elif node.op == "call_method" and node.target in ("relu", "flatten"):
            ops.append(_Op("relu") if node.target == "relu" else _Op("flatten", args=tuple(node.args[1:3]) or (0, -1)))
        else:
            raise ValueError(f"integer conversion does not support {node.format_node()}")
    if not any(op.kind == "layer" for op in ops):
        raise ValueError("integer conversion needs at least one Linear or Conv2d layer")
    return ops


def _float_op(op: _Op) -> nn.Module:
    if op.kind == "relu":
        return nn.ReLU()
    if op.kind == "pool":
        return op.module
    return nn.Flatten(*op.args)


def _layer_parts(model: nn.Module, op: _Op) -> tuple[Scheme, torch.Tensor, torch.Tensor, torch.Tensor | None,
                                                      torch.Tensor]:
    """(activation scheme, c_x, weight codes, bias codes or None, c_w) of a quantized layer."""
    state = quant_state(model)
    plan = state.plans.get(op.name)
    q = state.activations.get(op.name)
    what = f"layer {op.name!r}"
    if plan is None or plan.weight is None or q is None or q.dynamic:
        raise ValueError(f"{what}: integer-only inference needs quantized weights and static activation scales")
    act_fmt = _int_format(plan.activation, f"{what} activations")
    if not isinstance(plan.activation.granularity, PerTensor) or act_fmt.n != 8:
        raise ValueError(f"{what}: activations must be int8 or uint8 (zero point 128) per tensor, "
                         f"got {plan.activation}")
    _int_format(plan.weight, f"{what} weights", signed=True)
    cx = _frac_bits(q.scales, f"{what} activation scale")
    w = raw_weight(op.module, "weight").detach().double()
    sw = plan.weight.compute_scales(w)
    if plan.weight.granularity not in (PerTensor(), PerAxis(0)):
        raise ValueError(f"{what}: weight scales must be per tensor or per output channel, got {plan.weight}")
    cw = _frac_bits(sw, f"{what} weight scale")
    w_codes = plan.weight.round_scaled(w / sw).round()
    bias = None
    if op.module.bias is not None:
        plist = getattr(op.module, "parametrizations", {})
        grid = next((p for p in plist["bias"] if isinstance(p, BiasOnAccumulatorGrid)), None) if "bias" in plist \
            else None
        if grid is None:
            raise ValueError(f"{what}: its bias must be quantized to INT32 (config bias: int32) for integer-only "
                             "inference")
        b = raw_weight(op.module, "bias").detach().double()
        bias = torch.round(b / grid.accumulator_scale()).clamp(INT32_MIN, INT32_MAX)
    return plan.activation, cx, w_codes, bias, cw


def convert(model: nn.Module, rounding: str = "nearest-even") -> IntegerModel:
    """The integer-only equivalent of a model quantized with power-of-two static int8 scales.

    Args:
        model: a Linear / Conv2d (+ReLU, MaxPool2d, Flatten) chain, quantized by :func:`dtypelab.quantize_model`
            with int8 weights, int8 or uint8 activations (static, per tensor, pow2) and ``bias: int32``.
        rounding: how the requantizing shift rounds: ``"nearest-even"`` (equal to the fake-quant simulation),
            ``"half-up"`` or ``"floor"`` (the lab's bare shift).

    Returns:
        An :class:`IntegerModel`; ``int_model(x)`` takes the float input and returns float64 outputs equal to the
        quantized model's (evaluated in float64) exactly, with rounding ``"nearest-even"``.

    Raises:
        ValueError: the model is not quantized that way, or is not such a chain.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding {rounding!r}; valid: {', '.join(ROUNDINGS)}")
    if quant_state(model) is None:
        raise ValueError("convert needs a model quantized by dtypelab.quantize_model (int8 weights, static pow2 int8 "
                         "activations, bias: int32)")
    ops = _chain(model)
    layer_idx = [i for i, op in enumerate(ops) if op.kind == "layer"]
    parts = {i: _layer_parts(model, ops[i]) for i in layer_idx}
    seq: list[nn.Module] = [_float_op(op) for op in ops[: layer_idx[0]]]
    first_scheme, first_cx = parts[layer_idx[0]][0], parts[layer_idx[0]][1]
    seq.append(QuantizeInput(first_scheme, int(first_cx)))
    for j, i in enumerate(layer_idx):
        _, cx, w_codes, bias, cw = parts[i]
        last = j == len(layer_idx) - 1
        fused_relu = i + 1 < len(ops) and ops[i + 1].kind == "relu"
        acc_bits = (cx + cw).long()
        shift = None if last else (acc_bits - parts[layer_idx[j + 1]][1]).long()
        args = (w_codes, bias, 8, shift, acc_bits, fused_relu, rounding)
        seq.append(IntLinear(*args) if isinstance(ops[i].module, nn.Linear) else IntConv2d(ops[i].module, *args))
        end = layer_idx[j + 1] if not last else len(ops)
        rest = ops[i + 1 + int(fused_relu): end]
        if last:
            seq.append(Dequantize(acc_bits, seq[-1].channel_dim))
            seq.extend(_float_op(op) for op in rest)
        else:
            for op in rest:
                seq.append(CodeReLU() if op.kind == "relu" else CodeMaxPool2d(op.module) if op.kind == "pool"
                           else _float_op(op))
    return IntegerModel(*seq)


__all__ = ["convert", "IntegerModel", "IntLinear", "IntConv2d", "QuantizeInput", "CodeReLU", "CodeMaxPool2d",
           "Dequantize", "requantize", "ROUNDINGS"]
