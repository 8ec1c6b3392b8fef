"""Re-export: ``TrackSet`` lives in ``streamcover.data.tracks`` (shared with eval)."""

from streamcover.data.tracks import TrackSet

__all__ = ["TrackSet"]
