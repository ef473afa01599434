"""Facts the README states that the code can check: the cpu_info() keys,
the two set-up commands .ci/run executes, the length limit."""

import pathlib
import re

import pytest

import adamc

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.skipif(not README.exists(), reason="run from outside the source tree")


def test_cpu_info_keys_are_all_listed():
    text = README.read_text()
    item = text.split("- `adamc.cpu_info()`:", 1)[1].split("\n- ", 1)[0]
    listed = set(re.findall(r"`([a-z_]+)`", item))
    assert listed == set(adamc.cpu_info()), listed ^ set(adamc.cpu_info())


def test_two_setup_commands():
    text = README.read_text()
    block = text.split("<!-- setup-commands:start -->", 1)[1].split("<!-- setup-commands:end -->")[0]
    cmds = [x for x in block.splitlines() if x and not x.startswith(("`", "#", "<"))]
    assert len(cmds) == 2
    assert "pip install" in cmds[0] and cmds[0].endswith("python -m adamc")
    assert "pip install" in cmds[1] and cmds[1].endswith("python -m pytest")


def test_readme_length_and_no_placeholders():
    text = README.read_text()
    assert len(text.splitlines()) <= 320
    assert "@T" not in text  # measured times filled in
