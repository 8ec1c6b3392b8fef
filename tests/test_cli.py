"""The ``streamcover`` command is installed and lists its subcommands."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from consumers.cli import build_parser
from streamcover.cli import build_parser as build_library_parser


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(actions[0].choices)


SERVICE_COMMANDS = ["demo", "monitor", "setlist", "send", "mic", "broker"]
LIBRARY_COMMANDS = ["catalog", "identify", "embed", "train", "eval", "calibrate", "corpus"]


def test_full_parser_has_services_then_library_commands() -> None:
    assert _subcommands(build_parser()) == SERVICE_COMMANDS + LIBRARY_COMMANDS
    assert _subcommands(build_library_parser()) == LIBRARY_COMMANDS


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "consumers", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in SERVICE_COMMANDS + LIBRARY_COMMANDS:
        assert f"    {name}" in out


def test_python_m_streamcover_runs_the_library_commands_only() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamcover", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in LIBRARY_COMMANDS:
        assert f"    {name}" in out
    for name in SERVICE_COMMANDS:
        assert f"    {name}" not in out


def test_console_script_matches_module() -> None:
    exe = shutil.which("streamcover") or str(Path(sys.executable).parent / "streamcover")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("streamcover ")
    helptext = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "    monitor" in helptext and "    catalog" in helptext

