from collections.abc import Callable
from typing import Any

class Prescan:
    def __len__(self) -> int: ...
    def node(self, lo: int, size: int, /) -> bytes | None: ...
    def leaf(self, i: int, /) -> bytes: ...
    def chain(self, i: int, /) -> bytes: ...

def prescan(lines: list[bytes], threads: int, chunk_log: int = 9, /) -> Prescan: ...
def arrivals(
    seed: bytes, mean_ns: float, start_ns: int, end_ns: int, window: float, exact_gap: Callable[[float, float], int], /
) -> list[int]: ...
def scan_entries(
    prescan: Prescan | None,
    lines: list[bytes],
    start: int,
    stop: int,
    prev: bytes,
    serial: bytes,
    counter: int,
    boot: int,
    clock_ns: int,
    busy_ns: int,
    epoch: tuple[int, int, int, bytes, float, dict[int, int]] | None,
    layouts: dict[bytes, str],
    next_epoch: int,
    rate: float | None,
    commitment: Callable[[bytes], bytes],
    arrivals: Callable[[bytes, float, int, int], list[int]],
    memo: dict[tuple[int, int], bytes] | None,
    last_checkpoint: int,
    on_checkpoint: Callable[[int, bytes], bool] | None,
    /,
) -> tuple[
    int,
    bytes,
    list[bytes] | None,  # None: every line taken was read ahead (its leaf is the prescan's)
    int,
    int,
    int,
    tuple[int, int, int, bytes, float, dict[int, int]] | None,
    int,
    int,
    int,
    int,
    int,
]: ...
def tree_root(prescan: Prescan, size: int, memo: dict[tuple[int, int], bytes], /) -> bytes: ...
def parse_line(line: bytes, /) -> dict[str, Any] | None: ...
def sha256(data: bytes, /) -> bytes: ...
def blake3(*pieces: bytes) -> bytes: ...
def sha256_backend() -> str: ...
def sha256_backends() -> list[str]: ...
def set_sha256_backend(name: str, /) -> None: ...
def blake3_backend() -> str: ...
def blake3_backends() -> list[str]: ...
def set_blake3_backend(name: str, /) -> None: ...
