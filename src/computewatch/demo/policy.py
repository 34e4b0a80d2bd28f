"""The policy the demo applies: a byte-for-byte copy of examples/policies/demo.toml (a test checks
they are equal), kept in the package so an installed `computewatch demo` finds it."""

from __future__ import annotations

__all__ = ["DEMO_POLICY", "DEMO_POLICY_SOURCE"]

DEMO_POLICY_SOURCE = "examples/policies/demo.toml"

DEMO_POLICY = """# A policy sized for the project's demo runs (docs/rules.md), e.g.
#   computewatch train --preset tiny --steps 200
# The tiny char-transformer costs about 1.6e9 FLOPs per optimizer step (matmuls of forward and
# backward, 32 x 64-byte samples), so 200 steps are about 3.2e11 FLOPs. H = 4e11 keeps that run
# below H, while a run 3x longer (600 steps, about 9.7e11 >= 2H) or the "small" preset (about
# 2.3e10 FLOPs per step) is above 2H, where detection is guaranteed.
# To retune, change threshold_flops only: every rule is written relative to compute.H.

[policy]
name = "demo-policy"
version = 3  # expressions in CEL (Common Expression Language)
threshold_flops = 4e11

[data]
subset = 64

[benchmarks.final_loss]
samples = 32

[[rules]]
id = "report-over-H"
kind = "reporting"
when = "compute.over_threshold"
text = "Runs above H are reported."

[[rules]]
id = "ban-over-2H"
kind = "ban"
when = "compute.detectable"
text = "No run of 2H or more."

[[rules]]
id = "lr-cap"
kind = "requirement"
# Hyperparameter property: the precommitted and the recorded learning rates stay at or below 1e-2.
require = "hp.workload.optimizer.lr <= 1e-2 && max(lr) <= 1e-2"
text = "Learning rate at most 1e-2."

[[rules]]
id = "python-sources-only"
kind = "requirement"
# Data property on the random subset: about 19% of the demo's 65-byte samples hold one of
# these keywords; with 64 samples a fraction of 2% or less happens by chance about 3e-5 of the time.
require = "data_fraction('def |import |return ') > 0.02"
text = "The training data looks like Python source code."

[[rules]]
id = "no-overtraining"
kind = "requirement"
# Compound: over H/2, the final weights must not fit the data too well.
when = "compute.flops > 0.5 * compute.H"
require = "benchmarks.final_loss > 0.5"
text = "Runs above H/2 stay above a held-out loss of 0.5 nats per byte."
"""
