"""streamcover: hears catalogued songs — originals, remixes and covers — in live audio and uploads."""

__version__ = "0.1.0"
