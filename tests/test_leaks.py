"""No leaks: resident memory and live Python objects stay flat over 100k steps
and 10k optimizer constructions (Bottleneck's memory-test style)."""

import gc
import os
import sys

import numpy as np
import pytest

import adamc

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm"),
    pytest.mark.skipif(bool(os.environ.get("ADAMC_SANITIZE")),
                       reason="ASan's quarantine grows RSS by design"),
]


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def growth(fn, warmup, repeat):
    """RSS and live-object growth of repeat calls of fn, after warmup calls.

    Measured over two batches of repeat calls each, and the smaller growth
    returned: a leak grows in every batch, while a one-off heap expansion
    (the allocator keeping freed memory after other tests) shows in one.
    """
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(2):
        gc.collect()
        rss0, obj0 = rss_bytes(), len(gc.get_objects())
        for _ in range(repeat):
            fn()
        gc.collect()
        out.append((rss_bytes() - rss0, len(gc.get_objects()) - obj0))
    return min(r for r, _ in out), min(o for _, o in out)


def test_100k_steps_do_not_leak():
    ps = [np.ones(s, np.float32) for s in (7, 33, 1)] + [np.ones(5, np.float64)]
    gs = [np.full_like(p, 0.5) for p in ps]
    opt = adamc.AdamW(ps, amsgrad=True)
    refs = [sys.getrefcount(x) for x in ps + gs]
    d_rss, d_obj = growth(lambda: opt.step(gs), 2_000, 50_000)   # 100k steps in all
    assert d_rss < 1 << 19, d_rss      # < 512 KiB per 50k steps: a leak of 11+ bytes/step fails
    assert d_obj < 50, d_obj
    assert [sys.getrefcount(x) for x in ps + gs] == refs


def test_100k_steps_with_errors_do_not_leak():
    """Failed steps (every check raises) release everything they touched."""
    p = np.ones(8, np.float32)
    opt = adamc.Adam([p])
    bad = [np.ones(8, np.float64)]

    def fail():
        try:
            opt.step(bad)
        except TypeError:
            pass

    d_rss, d_obj = growth(fail, 1_000, 20_000)
    assert d_rss < 1 << 20 and d_obj < 50, (d_rss, d_obj)


def test_10k_constructions_do_not_leak():
    ps = [np.ones(100, np.float32), np.ones((3, 4), np.float64)]
    gs = [np.ones_like(p) for p in ps]

    def build():
        opt = adamc.Adam([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.1}], amsgrad=True)
        opt.step(gs)
        opt.load_state_dict(opt.state_dict())

    refs = [sys.getrefcount(x) for x in ps]
    d_rss, d_obj = growth(build, 500, 5_000)   # 10k constructions in all
    assert d_rss < 2 << 20, d_rss
    assert d_obj < 50, d_obj
    assert [sys.getrefcount(x) for x in ps] == refs
