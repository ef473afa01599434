"""Fixtures only.  The helpers tests share (arrays, snapshots, comparisons,
option lists) are in _toolkit.py."""

import os

import numpy as np
import pytest

import adamc
from adamc import reference


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads():
    """For tests that call adamc.set_num_threads: back to the default after."""
    yield
    adamc.set_num_threads(None)


@pytest.fixture
def clean_env():
    """No ADAMC_SERIAL_CUTOFF during the test; after it, the default thread
    count and the variable as it was."""
    old = os.environ.pop("ADAMC_SERIAL_CUTOFF", None)
    yield
    adamc.set_num_threads(None)
    if old is None:
        os.environ.pop("ADAMC_SERIAL_CUTOFF", None)
    else:
        os.environ["ADAMC_SERIAL_CUTOFF"] = old


@pytest.fixture(params=[adamc, reference], ids=["adamc", "reference"])
def impl(request):
    """The module under test: adamc, then adamc.reference (same API, same checks)."""
    return request.param


def _runnable_variants():
    from adamc import _kernels

    return _kernels.variants()[1]


@pytest.fixture(params=_runnable_variants())
def variant(request):
    """Run the test once per kernel variant this CPU can run, then restore."""
    from adamc import _kernels

    before = _kernels.kernel_name()
    _kernels.use_variant(request.param)
    yield request.param
    _kernels.use_variant(before)
