"""The ``streamcover`` command is installed and lists its subcommands."""

from __future__ import annotations

import subprocess
import sys

from streamcover.cli import COMMAND_MODULES


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streamcover", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in COMMAND_MODULES:
        assert f"    {name}" in out


def test_console_script_matches_module() -> None:
    import shutil
    from pathlib import Path

    exe = shutil.which("streamcover") or str(Path(sys.executable).parent / "streamcover")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("streamcover ")
