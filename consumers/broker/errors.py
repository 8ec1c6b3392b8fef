"""The broker launcher's one error type, and the helper that turns a failed tool run into it."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


class BrokerError(RuntimeError):
    """The local broker could not be fetched, formatted or started (message says which)."""


def run_checked(cmd: Sequence[str], what: str, cwd: Path | None = None) -> str:
    """Run ``cmd``; its stdout, or :class:`BrokerError` naming ``what`` with the output's tail."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()
        raise BrokerError(f"{what} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return proc.stdout
