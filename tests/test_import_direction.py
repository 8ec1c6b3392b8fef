"""Imports go one way: the service package (``consumers``) uses the library, never back."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Run in a fresh interpreter: with ``consumers`` unimportable, import every library module.
_SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "consumers" or name.startswith("consumers."):
                raise ImportError(f"the library imported the service package: {name}")
            return None

    sys.meta_path.insert(0, Block())
    import streamcover

    names = [m.name for m in pkgutil.walk_packages(streamcover.__path__, "streamcover.")]
    for name in names:
        importlib.import_module(name)
    print(len(names))
    """
)


def test_every_library_module_imports_without_the_service_package() -> None:
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 50


def test_the_library_cli_runs_without_the_service_package() -> None:
    script = _SCRIPT.split("import streamcover\n")[0] + (
        "from streamcover.cli import main\nraise SystemExit(main(['--help']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "    catalog" in proc.stdout and "    monitor" not in proc.stdout
