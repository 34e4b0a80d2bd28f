"""Issue 12, first contact: `--help` lists every choice and range, shows flags without a value
placeholder, and says what a command changes and which key it trusts."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from computewatch.cli import app

runner = CliRunner()


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(
    "command, shown",
    [
        (("sampling", "plan"), "<linear|exact>"),
        (("sampling", "table1"), "<linear|exact>"),
        (("sampling", "simulate"), "<minimum|fewer-longer|more-shorter>"),
        (("sampling", "simulate"), "[1<=x<=100000000]"),  # --trials
        (("sampling", "simulate"), "[x>=0]"),  # --seed, --samples
        (("train",), "<tiny|small|mlp>"),
        (("train",), "<ddp|fsdp>"),
        (("train",), "[0.0<=x<=86400.0]"),
        (("chip", "manufacture"), "[0.0<=x<=86400.0]"),
    ],
)
def test_choices_and_ranges_are_listed(command: tuple[str, ...], shown: str) -> None:
    assert shown in _help(*command)


@pytest.mark.parametrize(
    "command, flag",
    [
        (("sampling", "plan"), "--json"),
        (("sampling", "plan"), "--help"),
        (("chip", "verify-log"), "--trust-chip-copy"),
        (("chip", "verify-log"), "--json"),
        (("chip", "attest"), "--force"),
        (("train",), "--resume"),
        (("transcript", "export-hashes"), "--signed"),
    ],
)
def test_flags_show_no_value_placeholder(command: tuple[str, ...], flag: str) -> None:
    line = next(line for line in _help(*command).splitlines() if re.search(rf"{re.escape(flag)}\b", line))
    assert "<bool>" not in line, line


def test_attest_says_it_boots_the_chip_and_appends_to_its_log() -> None:
    text = " ".join(_help("chip", "attest").split())
    assert "Boot the chip" in text and "its log gains" in text and "boot counter goes up" in text


def test_verify_log_says_which_root_it_trusts() -> None:
    text = " ".join(_help("chip", "verify-log").split())
    assert "required unless --trust-chip-copy" in text and "whoever holds the chip can replace it" in text


def test_fsspec_urls_are_advertised_with_their_package() -> None:
    assert "with s3fs installed" in " ".join(_help("transcript", "show").split())
