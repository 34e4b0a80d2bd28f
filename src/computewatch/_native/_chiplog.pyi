def scan_snapshots(
    lines: list[bytes],
    start: int,
    stop: int,
    prev: bytes,
    serial: bytes,
    counter: int,
    boot: int,
    clock_ns: int,
    busy_ns: int,
    epoch: int,
    triggers: dict[int, int],
    layouts: dict[bytes, str],
    /,
) -> tuple[int, bytes, list[bytes], int, int, int]: ...
def sha256(data: bytes, /) -> bytes: ...
def blake3(data: bytes, /) -> bytes: ...
def sha256_backend() -> str: ...
def set_sha256_backend(name: str, /) -> None: ...
