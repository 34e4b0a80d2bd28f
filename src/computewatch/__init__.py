"""computewatch: verifiable rules on large-scale neural-network training by compute monitoring.

An implementation of Shavit, "What does it take to catch a Chinchilla?" (2023): chips that log
signed hashes of their weight shards at random times, Provers that keep training transcripts
explaining every snapshot, and the analysis of how many chips a Verifier must inspect.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
