"""Skips that cannot hide an attack in CI.

A test that cannot run on this machine (no `redis-server`, a host that refuses mounts)
is skipped here with a precise reason, which `pytest -ra` (our addopts) lists at the end
of every run. In CI (`CI=true`) the same test FAILS instead: a green CI run must mean
every attack ran.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def cannot_run_here(reason: str) -> NoReturn:
    """Skip the test with `reason` (what is missing and how to get it); fail it in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a test that cannot run is a failure, not a skip)", pytrace=False)
    # Reported at the test's own location (as a skipif mark is), not at this helper's.
    raise pytest.skip.Exception(reason, _use_item_location=True)
