"""The README's examples run and do what they say."""

import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.skipif(not README.exists(), reason="run from outside the source tree")
def test_quick_start_converges(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    ns = {}
    exec(blocks[0], ns)
    assert float(np.mean(ns["err"] ** 2)) < 1e-6
    exec(blocks[1], ns)  # the torch.optim-style snippet runs as written
