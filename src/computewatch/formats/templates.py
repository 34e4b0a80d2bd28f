"""Trusted program templates: training programs whose code is the Verifier's own.

For the common cases no Prover code runs at all. A template is a training program (under the
contract of `formats.program`) that ships inside computewatch and that the Verifier executes
from its own installed copy: its own data loader over the committed samples, its own model
built from a declared configuration, its own initialisation from the committed seed and its
own loss. A run declares it by naming the template in its precommitment (v3 ``program.template``);
the run's hyperparameters are then a declaration (a preset's settings, a Hugging Face model
config plus Trainer arguments), not code.

Pinned by digest: a template's files are the installed ones, hashed like any program
(`code_digest_of`). A precommitment that names a template binds that digest too, so a run
recorded with another computewatch version of the template is recognised as such (the
Verifier cannot execute code it does not pin), never silently replayed with the Prover's copy.

Templates:

* ``computewatch/demo-preset``: the demo workloads (``prover/workloads``; presets tiny, mlp,
  small ...), entry ``program:make_program``;
* ``computewatch/hf-trainer``: a Hugging Face ``transformers`` model config plus Trainer
  arguments, executed by the integration's program (``integrations/program``), entry
  ``hf_program:make_program``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from computewatch.crypto.errors import FormatError

__all__ = ["TEMPLATES", "Template", "get_template", "template_for"]

_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Template:
    name: str
    entry: str
    folder: str  # relative to the computewatch package: the pinned files (*.py at any depth)

    @property
    def root(self) -> Path:
        return _PACKAGE / self.folder

    def files(self) -> dict[str, bytes]:
        """The Verifier's own copy of the template's files, by relative POSIX path."""
        return dict(_files(self.root))

    @property
    def code_digest(self) -> str:
        return _digest(self.root)


@cache
def _files(root: Path) -> tuple[tuple[str, bytes], ...]:
    paths = sorted(p for p in root.rglob("*.py") if p.is_file() and "__pycache__" not in p.parts)
    return tuple((p.relative_to(root).as_posix(), p.read_bytes()) for p in paths)


@cache
def _digest(root: Path) -> str:
    from computewatch.formats.program import code_digest_of

    return code_digest_of(dict(_files(root)))


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("computewatch/demo-preset", "program:make_program", "prover/workloads"),
        Template("computewatch/hf-trainer", "hf_program:make_program", "integrations/program"),
    )
}


def get_template(name: str) -> Template:
    """The template of that name; FormatError naming the known ones otherwise."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise FormatError(f"unknown program template {name!r}; known: {', '.join(sorted(TEMPLATES))}") from None


def template_for(entry: str, code_digest: str) -> Template | None:
    """The template whose pinned files and entry these are (None: a custom program)."""
    for t in TEMPLATES.values():
        if t.entry == entry and t.code_digest == code_digest:
            return t
    return None
