"""Shared fixtures.  Framer tests take ``impl`` and so run against both the C
framer and its pure-Python twin in every test run."""

from __future__ import annotations

import pytest

from trioecho import _backend


@pytest.fixture(params=_backend.IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)
