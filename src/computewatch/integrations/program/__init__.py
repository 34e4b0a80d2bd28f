"""The integrations' training programs (docs/formats.md, "Training program"), replayed by a Verifier.

Entries: ``hf_program:make_program`` (runs of the Hugging Face Trainer integration) and
``lightning_program:make_program`` (runs of the Lightning integration, whose LightningModule's
own files travel in ``user/``). The files import each other relatively and nothing from
computewatch, so a replayer needs only torch and the framework the run used.
"""
