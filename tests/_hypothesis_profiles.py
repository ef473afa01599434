"""Hypothesis settings profiles for adamc's property-based tests.

Imported by tests/_strategies.py and tests/_fuzzing.py (so by every
tests/test_properties_*.py and tests/test_fuzz_*.py; conftest.py is left
alone).  The profile comes from the environment variable
``ADAMC_HYPOTHESIS_PROFILE``:

    dev (default)  ~40 examples per test, short state-machine runs: a quick
                   local check (the property and fuzz files together take
                   well under 30 s on a 2-core machine)
    ci             several hundred examples per test and longer state-machine
                   runs, for CI

    ADAMC_HYPOTHESIS_PROFILE=ci python -m pytest tests/test_properties_*.py tests/test_fuzz_*.py

``deadline=None`` everywhere: timings on shared machines are too noisy for
per-example deadlines to mean anything.  Examples are random (not
derandomized); a failure prints the falsifying example and a
``@reproduce_failure`` blob (``print_blob=True``) to replay it exactly.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_ENV = "ADAMC_HYPOTHESIS_PROFILE"

_common = dict(
    deadline=None,
    print_blob=True,
    # The tests build their arrays from drawn seeds, so data generation is
    # cheap; "too_slow" would only ever fire on a loaded machine.
    suppress_health_check=[HealthCheck.too_slow],
)

settings.register_profile("dev", max_examples=40, stateful_step_count=15, **_common)
settings.register_profile("ci", max_examples=400, stateful_step_count=40, **_common)

PROFILE = os.environ.get(PROFILE_ENV, "").strip() or "dev"
settings.load_profile(PROFILE)  # an unknown name raises InvalidArgument, listing none silently


def scaled(fraction, minimum=10):
    """A max_examples for a test that is more expensive per example than most:
    ``fraction`` of the active profile's count, but at least ``minimum``."""
    return max(minimum, int(settings.default.max_examples * fraction))
