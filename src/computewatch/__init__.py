"""computewatch: verifiable rules on large-scale neural-network training by compute monitoring.

An implementation of Shavit, "What does it take to catch a Chinchilla?" (2023): chips that log
signed hashes of their weight shards at random times, Provers that keep training transcripts
explaining every snapshot, and the analysis of how many chips a Verifier must inspect.

`computewatch.monitor(...)` (a plain PyTorch loop under monitoring, see
`computewatch.integrations.plain`) and `RunConfig`, the one configuration of how a run is
recorded that every entry point takes (`computewatch.prover.config`), are imported on first use, so ``import computewatch`` stays
free of torch.
"""

from computewatch._lazy import lazy_exports

__all__ = ["CheckpointConfig", "ChipConfig", "DistributedConfig", "Monitor", "RunConfig", "__version__", "monitor"]

__version__ = "0.1.0"

_CONFIG = "computewatch.prover.config"
__getattr__, _lazy_dir = lazy_exports(
    __name__,
    {
        "CheckpointConfig": _CONFIG,
        "ChipConfig": _CONFIG,
        "DistributedConfig": _CONFIG,
        "Monitor": "computewatch.integrations.plain",
        "RunConfig": _CONFIG,
        "monitor": "computewatch.integrations.plain",
    },
)


def __dir__() -> list[str]:
    return sorted({*globals(), *_lazy_dir()})
