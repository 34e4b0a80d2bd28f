"""W0 against the template initialisation, for a custom program with a template's architecture.

The `init` check recomputes W0 by calling the run's own `build_model` with the committed seed;
that proves nothing when the program itself is the cheat. A run-splitting Prover (paper §5.1,
"a long run as several short runs") writes run 2's `build_model` to draw from the committed
generator and then load run 1's final weights embedded in its code: the replay of that same
code agrees with itself. Where the judge can decide semantics itself, it does: if a template
(formats/templates.py) accepts the run's hyperparameters and builds a model with exactly the
tensors (names, shapes, dtypes) of the run's W0, the architecture is a template one, and W0
must be the template's own initialisation from the committed seed, bit for bit.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from typing import Any

import torch

from computewatch.formats.program import load_program
from computewatch.formats.seed import init_generator
from computewatch.formats.templates import TEMPLATES

__all__ = ["template_init_mismatch"]


def _template_w0(template: Any, hyperparameters: dict[str, Any], seed: bytes) -> dict[str, torch.Tensor] | None:
    try:
        with contextlib.redirect_stdout(io.StringIO()), load_program(template.files(), template.entry, template.code_digest) as loaded:
            model = loaded.make(hyperparameters, None).build_model(init_generator(seed))
            return {k: v.detach() for k, v in model.state_dict().items()}
    except Exception:  # noqa: BLE001 - the template does not take these hyperparameters: not its architecture
        return None


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def template_init_mismatch(hyperparameters: dict[str, Any], seed: bytes, w0: Mapping[str, torch.Tensor]) -> str | None:
    """None when no template has this architecture or W0 is the template's; else why not."""
    for template in TEMPLATES.values():
        ref = _template_w0(template, hyperparameters, seed)
        if ref is None or set(ref) != set(w0) or any(ref[k].shape != w0[k].shape or ref[k].dtype != w0[k].dtype for k in ref):
            continue
        differ = sorted(k for k in ref if not _same_bits(ref[k], w0[k]))
        if differ:
            return f"the custom program's W0 has the architecture of template {template.name} but is not its initialisation from the committed seed (tensor {differ[0]!r}{f' and {len(differ) - 1} more' if len(differ) > 1 else ''}): weights that did not start from the seed"
        return None
    return None
