"""The benchmark machinery's bookkeeping (never its timings): the shuffled
round order that bench/compare.py and python -m adamc time contenders in."""

from adamc import _bench


def timed_orders(names, rounds):
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in names}
    samples = _bench.interleaved_samples(contenders, rounds=rounds, target=0.0)
    # calibrate() calls each contender twice (warm-up, one timed rep), then
    # there is one rep per contender per round
    timed = calls[2 * len(names):]
    k = len(names)
    return [timed[i:i + k] for i in range(0, len(timed), k)], samples


def test_every_round_times_every_contender_once():
    orders, samples = timed_orders("abcde", 12)
    assert len(orders) == 12
    assert all(sorted(o) == list("abcde") for o in orders)
    assert {k: len(v) for k, v in samples.items()} == dict.fromkeys("abcde", 12)
    assert all(x >= 0 for v in samples.values() for x in v)


def test_order_varies_position_and_predecessor():
    orders, _ = timed_orders("abcde", 12)
    for name in "abcde":
        places = {o.index(name) for o in orders}
        before = {o[o.index(name) - 1] for o in orders if o.index(name) > 0}
        assert len(places) >= 3, (name, orders)
        assert len(before) >= 2, (name, orders)
    # seeded: every run times in the same orders
    assert timed_orders("abcde", 12)[0] == orders


def test_table_ratios():
    r = {"layout": "one", "dtype": "float32", "n": 1000, "tensors": 1, "bytes": 28000,
         "times": {"adamc": 3.0, "probe": 2.0, "numpy reference": 30.0}}
    head, rows = _bench.table([r], ["adamc", "probe", "numpy reference"])
    assert head == ["case", "adamc", "GB/s", "adamc/probe", "adamc/numpy reference"]
    assert rows[0][2:] == ["0.0", "1.500", "0.100"]


def test_ratio_uses_the_faster_probe():
    r = {"layout": "one", "dtype": "float32", "n": 1000, "tensors": 1, "bytes": 28000,
         "times": {"adamc": 3.0, "probe": 2.5, "plain probe": 2.0, "torch fused": 6.0}}
    names = ["adamc", "probe", "plain probe", "torch fused"]
    head, rows = _bench.table([r], names)
    assert head == ["case", "adamc", "GB/s", "adamc/probe", "adamc/torch fused"]
    assert rows[0][3:] == ["1.500", "0.500"]
    r["times"].update(probe=1.5)
    assert _bench.table([r], names)[1][0][3] == "2.000"
    # both probes are timed and shown
    assert _bench.times_table([r], names)[0] == ["case"] + names
