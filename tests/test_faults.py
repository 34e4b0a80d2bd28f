"""Fault injection is explicit: the library reads no test switch from the environment and ships
no test helper; handlers installed by a test (computewatch._faults) see each point, and only
inside their block. The crash tests that use them: test_chip_crash, test_prover_resume,
test_registry_concurrency, test_service_server, test_hardening_chip."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _faults import MarkWrites, PauseAt, parse

from computewatch import _faults

_SRC = Path(__file__).resolve().parents[1] / "src" / "computewatch"


def test_the_library_reads_no_test_switch_from_the_environment() -> None:
    found = []
    for path in _SRC.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"(?:environ(?:\.get)?|getenv)\(\s*[\"']?([A-Z_]*)|environ\[\s*[\"']?([A-Z_]*)", text):
            name = m.group(1) or m.group(2) or ""
            if "TEST" in name or "KILL" in name or "PAUSE" in name:
                found.append(f"{path.relative_to(_SRC)}: {name}")
        if re.search(r"\b(?:KILL|PAUSE|MARK)_ENV\b|leak_boot_key", text):
            found.append(f"{path.relative_to(_SRC)}: a test hook constant or key leak")
    assert not found, found
    assert not (_SRC / "chip" / "testing.py").exists()


def test_points_reach_installed_handlers_only_inside_their_block(tmp_path: Path) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(point: str, info: Mapping[str, Any]) -> None:
        seen.append((point, dict(info)))

    _faults.fault_point("chip.log.append", counter=1)  # nothing installed: nothing happens
    with _faults.installed(record, MarkWrites(tmp_path)):
        assert _faults.current()[0] is record
        _faults.fault_point("registry.write-requested")
        _faults.fault_point("registry.transaction", name="transfer")
    _faults.fault_point("registry.write-requested")
    assert seen == [("registry.write-requested", {}), ("registry.transaction", {"name": "transfer"})]
    assert (tmp_path / "write-requested").exists()
    assert _faults.current() == ()


def test_a_register_write_passes_its_points(tmp_path: Path) -> None:
    from computewatch.registry import Registry

    points: list[str] = []
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        with _faults.installed(lambda point, info: points.append(point)):
            reg.set_setting("loss_investigation_threshold", 6)
    finally:
        reg.close()
    assert "registry.write-requested" in points


def test_fault_arguments_name_their_handlers(tmp_path: Path) -> None:
    pause = parse(f"pause=transfer:{tmp_path}")
    assert isinstance(pause, PauseAt) and pause.name == "transfer" and pause.folder == str(tmp_path)
    assert parse("kill-append=12").counter == 12
    assert parse("kill-checkpoint=6").step == 6
