"""The one thin bridge from the CLI to ``consumers/`` (the Kafka services).

The library never imports ``consumers`` statically; service commands resolve
their entry point here, at run time, so ``streamcover`` stays importable and
testable without aiokafka or a broker.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any


def run_service(entry: str, args: argparse.Namespace) -> Any:
    """Call ``consumers.<module>:<function>(args)``."""
    module_name, _, func_name = entry.partition(":")
    module = importlib.import_module(f"consumers.{module_name}")
    return getattr(module, func_name)(args)
