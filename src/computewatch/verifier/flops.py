"""FLOPs of a training step, measured on replay: 1 FMA = 2 FLOP, forward + backward + optimizer.

Every aten operation the step dispatches is classified, none is silently counted as zero:
- linear algebra (mm, addmm, bmm, convolutions, attention): torch's own `flop_counter`
  formulas (2·M·N·K per matmul), plus the CPU attention kernels the counter does not know
  (`_scaled_dot_product_flash_attention_for_cpu` and its backward), counted here;
- pointwise and reduction operations (tags `pointwise` / `reduction`), fused kernels such as
  softmax, layer norm and the losses, and the optimizer's `_foreach_*` kernels: a fixed number
  of FLOPs per element (documented in `_PER_ELEMENT`);
- pure data movement (views, copies, concatenation, gathers, allocation): 0, by name;
- anything else is *unknown*: reported with its call count, and the count is marked partial.

The rules' convention (EU AI Act, US EO 14110, Epoch AI) counts training compute the same way
(2 FLOP per multiply-accumulate); `matmul` is that figure alone, `total` adds the rest.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils import flop_counter as _fc
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["FlopCount", "count_flops"]

# FLOPs per output element (per input element for reductions) of fused or composite kernels.
_PER_ELEMENT = {
    "aten._softmax": 5,  # max, subtract, exp, sum, divide
    "aten._log_softmax": 5,
    "aten._softmax_backward_data": 3,
    "aten._log_softmax_backward_data": 3,
    "aten.native_layer_norm": 8,
    "aten.native_layer_norm_backward": 14,
    "aten.nll_loss_forward": 1,
    "aten.nll_loss_backward": 1,
    "aten.embedding_dense_backward": 1,  # scatter-add of the gradient rows
    "aten.linalg_vector_norm": 2,
    "aten._foreach_add_": 1,
    "aten._foreach_add": 1,
    "aten._foreach_sub_": 1,
    "aten._foreach_mul_": 1,
    "aten._foreach_mul": 1,
    "aten._foreach_div_": 1,
    "aten._foreach_div": 1,
    "aten._foreach_sqrt": 1,
    "aten._foreach_sqrt_": 1,
    "aten._foreach_addcmul_": 2,
    "aten._foreach_addcdiv_": 2,
    "aten._foreach_lerp_": 2,
    "aten._foreach_norm": 2,
    "aten._foreach_neg": 1,
    "aten._foreach_maximum_": 1,
}
# Operations that move or allocate memory and do no arithmetic.
_NO_ARITHMETIC = {
    "aten.detach", "aten.lift_fresh", "aten._unsafe_view", "aten.view", "aten.reshape", "aten.t",
    "aten.transpose", "aten.permute", "aten.expand", "aten.squeeze", "aten.unsqueeze", "aten.split",
    "aten.split_with_sizes", "aten.slice", "aten.select", "aten.cat", "aten.stack", "aten.clone",
    "aten.copy_", "aten._to_copy", "aten.contiguous", "aten.arange", "aten.ones", "aten.zeros",
    "aten.ones_like", "aten.zeros_like", "aten.empty", "aten.empty_like", "aten.empty_strided",
    "aten.new_empty", "aten.new_empty_strided", "aten.new_zeros", "aten.new_ones", "aten.full",
    "aten.full_like", "aten.fill_", "aten.zero_", "aten.triu", "aten.tril", "aten.embedding",
    "aten.index_select", "aten.gather", "aten._local_scalar_dense", "aten.alias", "aten.as_strided",
    "aten.unbind", "aten.chunk", "aten.narrow", "aten.flatten", "aten.unflatten", "aten.set_",
    "aten.resize_", "aten.scalar_tensor", "aten.lift", "aten._foreach_copy_", "aten._foreach_zero_",
    "aten.masked_fill", "aten.where", "aten.clamp", "aten.clamp_min", "aten.clamp_max",
    "aten.index", "aten.index_put_", "aten._has_compatible_shallow_copy_type", "aten.detach_",
    "aten.is_same_size", "aten.equal", "aten._pin_memory", "aten.is_pinned", "aten.bernoulli_",
    "aten.random_", "aten.uniform_", "aten.normal_",
}


def _numel(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, (list, tuple)):
        return sum(_numel(v) for v in value)
    return 0


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else ()


def _cpu_attention(args: tuple[Any, ...], backward: bool) -> int:
    # query (b, h, s_q, d), key (b, h, s_k, d), value (b, h, s_k, d_v): QK^T and PV, 2 FLOP per
    # MAC; the backward pass runs four such products.
    if backward:
        args = args[1:]  # grad_out first
    q, k, v = (_shape(a) for a in args[:3])
    if len(q) != 4 or len(k) != 4 or len(v) != 4:
        return 0
    b, h, s_q, d = q
    s_k, d_v = k[2], v[3]
    forward = 2 * b * h * s_q * s_k * (d + d_v)
    return 2 * forward if backward else forward


_OWN_FORMULAS: dict[str, Callable[[tuple[Any, ...]], int]] = {
    "aten._scaled_dot_product_flash_attention_for_cpu": lambda a: _cpu_attention(a, False),
    "aten._scaled_dot_product_flash_attention_for_cpu_backward": lambda a: _cpu_attention(a, True),
}


@dataclass
class FlopCount:
    """FLOPs one measured call performed, by kind; `unknown` ops were not counted (partial)."""

    matmul: int = 0
    other: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    unknown: Counter[str] = field(default_factory=Counter)  # op name -> calls

    @property
    def total(self) -> int:
        return self.matmul + self.other

    @property
    def complete(self) -> bool:
        return not self.unknown

    def add(self, other: FlopCount) -> FlopCount:
        """This count plus `other`'s (several steps counted one by one)."""
        self.matmul += other.matmul
        self.other += other.other
        self.by_op.update(other.by_op)
        self.unknown.update(other.unknown)
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "matmul": self.matmul,
            "other": self.other,
            "complete": self.complete,
            "unknown_ops": dict(sorted(self.unknown.items())),
        }


class _Counter(TorchDispatchMode):
    def __init__(self, count: FlopCount) -> None:
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._account(func, args, kwargs, out)
        return out

    def _account(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        packet = func._overloadpacket
        name = str(packet)
        if packet in _fc.flop_registry:
            flops = int(_fc.flop_registry[packet](*args, **kwargs, out_val=out))
            self.count.matmul += flops
        elif name in _OWN_FORMULAS:
            flops = _OWN_FORMULAS[name](args)
            self.count.matmul += flops
        elif name in _NO_ARITHMETIC or getattr(func, "is_view", False) or name.startswith("profiler."):
            return
        elif name in _PER_ELEMENT:
            flops = _PER_ELEMENT[name] * max(_numel(out), _numel(args[0]) if args else 0)
            self.count.other += flops
        elif torch.Tag.reduction in func.tags:
            flops = _numel(args[0]) if args else 0
            self.count.other += flops
        elif torch.Tag.pointwise in func.tags:
            flops = _numel(out)
            self.count.other += flops
        else:
            self.count.unknown[name] += 1
            return
        self.count.by_op[name] += flops


def count_flops(fn: Callable[[], Any]) -> tuple[Any, FlopCount]:
    """Run `fn()` under the counter; returns its result and the FLOPs it dispatched."""
    count = FlopCount()
    with _Counter(count):
        result = fn()
    if math.isnan(float(count.total)):  # pragma: no cover - formulas return integers
        raise ValueError("FLOP formula returned NaN")
    return result, count
