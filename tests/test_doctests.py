"""The examples in adamc's docstrings run and print what they show."""

import doctest
import importlib

import pytest

MODULES = ["adamc.optim", "adamc._runtime", "adamc._kernels", "adamc.reference",
           "adamc.checkpoint"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0  # the examples were found, not silently skipped


def test_public_docstrings_have_examples():
    import adamc

    for name in ("Adam", "AdamW", "adam_step", "cpu_info", "set_num_threads", "save_state"):
        assert "Examples" in (getattr(adamc, name).__doc__ or ""), name
