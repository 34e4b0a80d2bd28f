"""A custom program with a template's architecture is checked against that template.

The `init` check recomputes W0 by calling the run's own `build_model` with the committed seed,
and the policy's `final_loss` benchmark calls the run's own `loss`: that proves nothing when the
program itself is the cheat. A run-splitting Prover (paper §5.1, "a long run as several short
runs") writes run 2's `build_model` to draw from the committed generator and then load run 1's
final weights embedded in its code; another returns `loss + 10` so that a rule capping the final
model's capability sees a weak model. Where the judge can decide semantics itself, it does: if a
template (formats/templates.py) accepts the run's hyperparameters and builds a model with
exactly the tensors (names, shapes, dtypes) of the run's W0, the run declares that template's
architecture (its "twin"), so

* W0 must be the template's own initialisation from the committed seed, bit for bit
  (`template_init_mismatch`, an `init` finding), and
* the facts a policy reads about data and the final weights (`final_loss`, the data subset) are
  computed with the template's sample, collate and loss, not the program's (`template_twin`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from computewatch.formats.program import load_program
from computewatch.formats.seed import init_generator
from computewatch.formats.templates import TEMPLATES, Template

__all__ = ["template_init_mismatch", "template_twin"]


def _same_tensors(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


@contextmanager
def template_twin(hyperparameters: dict[str, Any], seed: bytes, w0: Mapping[str, torch.Tensor], data_dir: str | Path | None = None) -> Iterator[tuple[Template, Any, dict[str, torch.Tensor]] | None]:
    """(template, its program built from these hyperparameters, its W0) for the template whose
    architecture W0 has; None when no template takes these hyperparameters or none matches."""
    for template in TEMPLATES.values():
        stack = ExitStack()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                loaded = stack.enter_context(load_program(template.files(), template.entry, template.code_digest))
                program = loaded.make(hyperparameters, data_dir)
                ref = {k: v.detach() for k, v in program.build_model(init_generator(seed)).state_dict().items()}
        except Exception:  # noqa: BLE001 - the template does not take these hyperparameters: not its architecture
            stack.close()
            continue
        if not _same_tensors(ref, w0):
            stack.close()
            continue
        with stack:
            yield template, program, ref
        return
    yield None


def template_init_mismatch(hyperparameters: dict[str, Any], seed: bytes, w0: Mapping[str, torch.Tensor]) -> str | None:
    """None when no template has this architecture or W0 is the template's; else why not."""
    with template_twin(hyperparameters, seed, w0) as twin:
        if twin is None:
            return None
        template, _program, ref = twin
        differ = sorted(k for k in ref if not _same_bits(ref[k], w0[k]))
    if not differ:
        return None
    more = f" and {len(differ) - 1} more" if len(differ) > 1 else ""
    return f"the custom program's W0 has the architecture of template {template.name} but is not its initialisation from the committed seed (tensor {differ[0]!r}{more}): weights that did not start from the seed"
