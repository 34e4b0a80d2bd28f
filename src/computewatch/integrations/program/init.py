"""W0 from the committed seed, for models that frameworks build with their own initialisation.

`init_weights` overwrites every parameter in place, in ``named_parameters()`` order (a shared
parameter, such as tied embeddings, once), drawing only from the generator it is given
(`computewatch.formats.seed.init_generator(seed)`), scheme ``computewatch/normal-v1``:

- a parameter with two or more dimensions: N(0, std^2), ``Tensor.normal_(0, std, generator=g)``;
- the 1-D ``weight`` of a normalisation module (class name containing ``Norm``): ones;
- every other parameter (biases, 1-D scales elsewhere): zeros.

Buffers are left as the module's constructor made them (they follow from its configuration).
The integration applies it to the lab's model before the first step; the program's
``build_model`` applies it to a freshly built one, so both give the same W0 bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["INIT_SCHEME", "check_init_spec", "init_spec", "init_weights"]

INIT_SCHEME = "computewatch/normal-v1"


def init_weights(model: nn.Module, generator: torch.Generator, std: float) -> None:
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, param in model.named_parameters():
            owner, _, leaf = name.rpartition(".")
            if param.ndim >= 2:
                param.normal_(0.0, std, generator=generator)
            elif leaf == "weight" and "Norm" in type(modules[owner]).__name__:
                param.fill_(1.0)
            else:
                param.zero_()


def init_spec(std: float) -> dict[str, object]:
    """The hyperparameters record of this initialisation."""
    return {"scheme": INIT_SCHEME, "std": std}


def check_init_spec(spec: object) -> float:
    if not isinstance(spec, dict) or spec.get("scheme") != INIT_SCHEME or not isinstance(spec.get("std"), (int, float)):
        raise ValueError(f"unsupported initialisation record {spec!r}; this program knows {INIT_SCHEME!r}")
    return float(spec["std"])
