"""The benchmark machinery's bookkeeping (never its timings): the rotating
round order and the paired ratios that bench/compare.py and python -m adamc
report."""

from adamc import _bench


def test_rounds_rotate_the_order_of_contenders():
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    samples = _bench.interleaved_samples(contenders, rounds=4, target=0.0)
    # calibrate() calls each contender twice (warm-up, one timed rep), then one
    # rep per round: round r starts at contender r mod 3.
    timed = calls[6:]
    assert timed == list("abc" "bca" "cab" "abc")
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(x >= 0 for v in samples.values() for x in v)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # A slow drift that doubles every time hits both alike: paired ratios
    # see 1.5 every round; the ratio of the medians would not.
    a = [1.5, 3.0, 6.0, 12.0, 24.0]
    b = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert _bench.paired_ratio(a, b) == 1.5
    a2 = [1.0, 9.0, 1.2]
    b2 = [1.0, 1.0, 1.0]
    assert _bench.paired_ratio(a2, b2) == 1.2


def test_table_uses_paired_ratios():
    r = {"layout": "one", "dtype": "float32", "n": 1000, "tensors": 1, "bytes": 28000,
         "samples": {"adamc": [2.0, 4.0, 8.0], "probe": [1.0, 4.0, 4.0]}}
    r["times"] = {"adamc": 4.0, "probe": 4.0}
    head, rows = _bench.table([r], ["adamc", "probe"])
    assert head[:4] == ["case", "adamc", "GB/s", "adamc/probe"]
    assert rows[0][3] == "2.000"  # median of 2, 1, 2; the medians' ratio is 1
