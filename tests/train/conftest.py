"""Fixtures for the training tests."""

from __future__ import annotations

import pytest

from streamcover.data.shs import DEFAULT_SHS_PATH, ShsData, load_shs


@pytest.fixture(scope="session")
def shs_real_slice() -> ShsData:
    """The first 24 works of the real SHS100K-TEST HPCP file (read in place)."""
    if not DEFAULT_SHS_PATH.is_file():
        pytest.skip(f"shared SHS HPCP file {DEFAULT_SHS_PATH} is not on this machine")
    return load_shs(DEFAULT_SHS_PATH, limit_works=24)
