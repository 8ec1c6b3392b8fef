"""streamcover: hears catalogued songs — originals, remixes and covers — in live audio and uploads."""

import os

# OpenMP threads that spin while waiting steal the CPU from every other process on a small,
# shared machine (measured: 2 torch threads ran ~10x slower than 1 beside another busy process).
# This must be set before torch is first imported, so it lives here, ahead of every entry point.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
