"""Re-export: the SHS100K-TEST HPCP loader lives in ``streamcover.data.shs`` (shared with eval)."""

from streamcover.data.shs import *  # noqa: F403
from streamcover.data.shs import __all__ as __all__
