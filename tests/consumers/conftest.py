"""The monitor tests' shared test world (not a broker fixture: those live in tests/conftest.py)."""

from __future__ import annotations

import pytest
from monitor_world import World, make_world

from streamcover.config import KafkaSettings


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Catalog of 4 synthetic works + a jingle, built with the untrained seed-1234 encoder."""
    return make_world(tmp_path_factory.mktemp("world"), KafkaSettings(), n_works=4, seconds=70)
