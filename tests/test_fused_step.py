"""The fused training step: grad_scale (unscale), max_grad_norm (global-norm
clipping) and skip_nonfinite in the step; the LossScaler; global_norm and
clip_grad_norm.  Against the reference (bitwise on the baseline kernel), a
NumPy transcription of torch's rules, and torch itself when installed."""

import math
import os

import numpy as np
import pytest

import adamc
from _toolkit import assert_unchanged, load_example, snapshot, state_of
from adamc import reference


def problem(rng, dtypes=(np.float32, np.float64), n=5000, scale=30.0):
    ps = [rng.standard_normal(n).astype(dtypes[0]),
          np.asfortranarray(rng.standard_normal((40, 9)).astype(dtypes[-1]))]
    gs = [[np.asarray(rng.standard_normal(p.shape) * scale, dtype=p.dtype, order="K")
           .reshape(p.shape, order="A") for p in ps] for _ in range(4)]
    gs = [[np.asfortranarray(g) if p.flags.f_contiguous and p.ndim > 1 else g
           for g, p in zip(step, ps)] for step in gs]
    return ps, gs


def torch_rules(sumsq, scale, max_norm):
    """torch: GradScaler.unscale_ (g * (1/scale)), clip_grad_norm_ (coef
    max_norm / (norm + 1e-6) clamped to 1)."""
    norm = math.sqrt(sumsq) / scale
    return norm, min(1.0, max_norm / (norm + 1e-6)) / scale


@pytest.mark.parametrize("options", [{}, {"amsgrad": True, "maximize": True},
                                     {"weight_decay": 0.1, "decoupled_weight_decay": True}])
@pytest.mark.parametrize("fused", [{"grad_scale": 1024.0}, {"max_grad_norm": 0.5},
                                   {"grad_scale": 8.0, "max_grad_norm": 1.0,
                                    "skip_nonfinite": True}, {"skip_nonfinite": True}])
def test_fused_step_matches_the_reference(variant, options, fused):
    rng = np.random.default_rng(1)
    ps, gs = problem(rng)
    runs = []
    for module in (adamc, reference):
        qs = [p.copy(order="K") for p in ps]
        opt = module.Adam(qs, lr=1e-2, **options)
        infos = []
        for g in gs:
            opt.step(g, **fused)
            infos.append(opt.last_step)
        runs.append((qs, infos))
    (qa, ia), (qb, ib) = runs
    assert ia == ib  # the norm and the factor: bitwise, in double
    for a, b in zip(qa, qb):
        if variant == "baseline":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_norm_and_factor_follow_torchs_formulas():
    rng = np.random.default_rng(2)
    ps, gs = problem(rng, dtypes=(np.float64,))
    opt = adamc.Adam([p.copy(order="K") for p in ps])
    opt.step(gs[0], grad_scale=16.0, max_grad_norm=2.0)
    sumsq = sum(float(np.sum(g.astype(np.float64) ** 2)) for g in gs[0])
    norm, factor = torch_rules(sumsq, 16.0, 2.0)
    assert opt.last_step.norm == pytest.approx(norm, rel=1e-13)
    assert opt.last_step.factor == pytest.approx(factor, rel=1e-13)
    assert not opt.last_step.skipped


def test_fused_step_equals_unscale_clip_then_plain_step():
    """In float64 the fused step and NumPy's separate passes (unscale, clip,
    step) agree to rounding."""
    rng = np.random.default_rng(3)
    ps, gs = problem(rng, dtypes=(np.float64,))
    a = [p.copy(order="K") for p in ps]
    b = [p.copy(order="K") for p in ps]
    fused, plain = adamc.Adam(a, lr=1e-2), adamc.Adam(b, lr=1e-2)
    for g in gs:
        fused.step(g, grad_scale=4.0, max_grad_norm=3.0)
        u = [x / 4.0 for x in g]
        norm = math.sqrt(sum(float(np.sum(x * x)) for x in u))
        coef = min(1.0, 3.0 / (norm + 1e-6))
        plain.step([x * coef for x in u])
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_norm_is_bitwise_the_same_for_any_thread_count(clean_env):
    rng = np.random.default_rng(4)
    gs = [rng.standard_normal(n).astype(dt) for n, dt in
          [(300_001, np.float32), (77, np.float64), (150_000, np.float16)]]
    os.environ["ADAMC_SERIAL_CUTOFF"] = "0"
    norms = set()
    for threads in (1, 2, 3):
        adamc.set_num_threads(threads)
        norms.add(adamc.global_norm(gs))
    assert len(norms) == 1
    assert norms.pop() == math.sqrt(reference.grad_sumsq(gs))


@pytest.mark.parametrize("module", [adamc, reference])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_nonfinite_gradient_skips_the_whole_step(module, bad):
    rng = np.random.default_rng(5)
    ps, gs = problem(rng)
    opt = module.Adam(ps, lr=1e-2)
    opt.step(gs[0])
    snap = snapshot(opt)
    g = [x.copy(order="K") for x in gs[1]]
    g[1].flat[7] = bad
    opt.step(g, skip_nonfinite=True, max_grad_norm=1.0)
    assert opt.last_step.skipped and not math.isfinite(opt.last_step.norm)
    assert_unchanged(opt, snap)
    # the first step skipped: no state appears either
    fresh = module.Adam([p.copy(order="K") for p in ps])
    fresh.step(g, skip_nonfinite=True)
    assert fresh.state_dict()["state"] == {}
    # without skip_nonfinite it goes through, as torch's clip_grad_norm_ lets
    # it: an infinite norm clips by 0 (inf * 0 = NaN there), a NaN norm by NaN
    opt.step(g, max_grad_norm=1.0)
    assert np.isnan(ps[1].flat[7])
    assert np.isnan(ps[0]).all() == np.isnan(bad)


@pytest.mark.parametrize("module", [adamc, reference])
@pytest.mark.parametrize("swap", ["edit", "load_state_dict", "none"])
def test_a_skipped_step_keeps_no_scheduled_lr(module, swap):
    """The schedules are called before the norm; after a skip the next step
    calls them again (a schedule swapped in meanwhile, or one that reads
    outside state, is not answered by the skipped step's value)."""
    calls = []
    def sched(name, lr):
        return lambda t: (calls.append((name, t)), lr)[1]
    w = np.zeros(3, np.float32)
    opt = module.Adam([w], lr=sched("first", 0.5))
    sd = opt.state_dict()
    opt.step([np.array([np.inf, 1, 1], np.float32)], skip_nonfinite=True)
    assert opt.last_step.skipped and calls == [("first", 1)]
    if swap == "edit":
        opt.param_groups[0]["lr"] = sched("second", 1e-3)
    elif swap == "load_state_dict":
        sd["param_groups"][0]["lr"] = sched("second", 1e-3)
        opt.load_state_dict(sd)
    opt.step([np.ones(3, np.float32)])
    want = [("first", 1), ("first" if swap == "none" else "second", 1)]
    assert calls == want
    np.testing.assert_allclose(w, -0.5 if swap == "none" else -1e-3, rtol=1e-6)


@pytest.mark.parametrize("module", [adamc, reference])
@pytest.mark.parametrize("fused", [{}, {"max_grad_norm": 1.0}])
def test_a_schedule_editing_its_group_is_called_once_a_step(module, fused):
    """OneCycle-style: the lr schedule also sets betas (a new tuple each
    call).  The edit makes the engine take the groups again; the lr it
    already has stays (it was asked again, forever)."""
    calls = []
    w = np.zeros(4, np.float32)
    def lr(t):
        calls.append(t)
        assert len(calls) < 50
        opt.param_groups[0]["betas"] = (0.85 + 0.001 * t, 0.999)
        return 1e-3
    opt = module.Adam([w], lr=lr)
    for _ in range(3):
        opt.step([np.ones(4, np.float32)], **fused)
    assert calls == [1, 2, 3]


@pytest.mark.parametrize("module", [adamc, reference])
def test_an_all_zero_gradient_steps_as_the_plain_step(module):
    p, q = np.ones(9), np.ones(9)
    a, b = module.Adam([p]), module.Adam([q])
    a.step([np.zeros(9)], max_grad_norm=1.0, grad_scale=2.0, skip_nonfinite=True)
    b.step([np.zeros(9)])
    assert a.last_step == (0.0, 0.5, False)
    np.testing.assert_array_equal(p, q)
    for k, v in state_of(a, 0).items():
        np.testing.assert_array_equal(v, state_of(b, 0)[k])


@pytest.mark.parametrize("module", [adamc, reference])
@pytest.mark.parametrize("kw, exc, msg", [
    ({"grad_scale": 0.0}, ValueError, "grad_scale must be > 0"),
    ({"grad_scale": -2.0}, ValueError, "grad_scale must be > 0"),
    ({"max_grad_norm": -1.0}, ValueError, "max_grad_norm must be > 0"),
    ({"grad_scale": np.nan}, ValueError, "grad_scale must be finite"),
    ({"grad_scale": np.inf}, ValueError, "grad_scale must be finite"),
    ({"grad_scale": 2.0**129}, ValueError, "grad_scale must be between 2.93874e-39 and 3.40282e"),
    ({"grad_scale": 1e-40}, ValueError, "grad_scale must be between 2.93874e-39 and"),
    ({"max_grad_norm": 0}, ValueError, "max_grad_norm must be > 0"),
    ({"max_grad_norm": float("nan")}, ValueError, "max_grad_norm must be finite"),
    ({"max_grad_norm": "1"}, TypeError, "max_grad_norm must be a real number"),
    ({"skip_nonfinite": 1}, TypeError, "skip_nonfinite must be True or False"),
])
def test_bad_fused_options_change_nothing(module, kw, exc, msg):
    p = np.ones(4)
    opt = module.Adam([p])
    opt.step([np.ones(4)])
    snap = snapshot(opt)
    with pytest.raises(exc, match=msg):
        opt.step([np.ones(4)], **kw)
    assert_unchanged(opt, snap)


def test_loss_scaler_follows_grad_scalers_rules():
    """Growth after growth_interval clean steps, backoff on an Inf, the
    skipped step changing nothing: a hand simulation of torch's rules."""
    w = np.ones(3, dtype=np.float32)
    opt = adamc.Adam([w], lr=1e-3)
    scaler = adamc.LossScaler(init_scale=8.0, growth_interval=3)
    scale, tracker = 8.0, 0
    pattern = [0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0]
    for t, inject in enumerate(pattern):
        g = np.full(3, 0.5 * scaler.scale, dtype=np.float32)
        if inject:
            g[1] = np.inf
        before = w.copy()
        took = scaler.step(opt, [g], max_grad_norm=10.0)
        assert took == (not inject)
        if inject:
            np.testing.assert_array_equal(w, before)
            scale, tracker = scale * 0.5, 0
        else:
            assert opt.last_step.norm == pytest.approx(0.5 * math.sqrt(3))
            tracker += 1
            if tracker == 3:
                scale, tracker = scale * 2.0, 0
        assert (scaler.scale, scaler.growth_tracker) == (scale, tracker), t
    assert opt.state_dict()["state"][0]["step"] == pattern.count(0)
    # state_dict round trip, and bad ones refused whole
    sd = scaler.state_dict()
    other = adamc.LossScaler()
    other.load_state_dict(sd)
    assert other.state_dict() == sd
    for bad in [{**sd, "scale": -1.0}, {k: v for k, v in sd.items() if k != "scale"},
                {**sd, "extra": 1}, {**sd, "growth_tracker": -1}, [1, 2]]:
        with pytest.raises(ValueError):
            other.load_state_dict(bad)
        assert other.state_dict() == sd


def test_loss_scaler_keeps_its_scale_in_float32_as_torch():
    """Each new scale is the product rounded to float32 (torch's
    _amp_update_scale_), and a growth to float32's infinity is not taken;
    the scale never leaves float32's range, so its state_dict always loads."""
    scaler = adamc.LossScaler(init_scale=3.7, growth_factor=1.37, backoff_factor=0.71,
                              growth_interval=1)
    want = np.float32(3.7)
    for t in range(300):
        skipped = t % 7 == 3
        scaler.update(skipped)
        new = np.float32(float(want) * (0.71 if skipped else 1.37))
        want = new if np.isfinite(new) else want
        assert scaler.scale == float(want), t
    assert scaler.scale > 1e29   # it grew through non-powers of two
    top = adamc.LossScaler(init_scale=2.0**127, growth_interval=1)
    top.update(False)
    assert (top.scale, top.growth_tracker) == (2.0**127, 0)   # 2**128 is inf in float32
    adamc.LossScaler().load_state_dict(top.state_dict())
    with pytest.raises(ValueError, match="init_scale must be between 2.93874e-39 and 3.40282e"):
        adamc.LossScaler(init_scale=2.0**128)
    low = adamc.LossScaler(init_scale=1e-38)
    for _ in range(5):
        low.update(True)   # backs off to the smallest loss scale, never to 0
    assert low.scale == pytest.approx(2.93874e-39, rel=1e-5)
    # torch GradScaler's state_dict (its tracker is '_growth_tracker'); numpy ints
    torchs = {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
              "growth_interval": np.int64(3), "_growth_tracker": 2}
    loaded = adamc.LossScaler()
    loaded.load_state_dict(torchs)
    assert (loaded.scale, loaded.growth_interval, loaded.growth_tracker) == (1024.0, 3, 2)
    assert type(loaded.growth_interval) is int
    with pytest.raises(ValueError, match="growth_tracker'] .5. must be below growth_interval"):
        adamc.LossScaler().load_state_dict({**top.state_dict(), "growth_interval": 3,
                                            "growth_tracker": 5})


@pytest.mark.parametrize("module", [adamc, reference])
def test_an_overflowing_sum_of_squares_of_finite_gradients_is_no_skip(module):
    """float64 gradients beyond 1e154 overflow the double sum of squares:
    they are finite, so the step is taken (GradScaler skips only for an Inf
    or NaN element), with the norm taken again rescaled."""
    g = np.array([1e200, -1e200, 1.0, 1.0])
    w = np.zeros(4)
    opt = module.Adam([w], lr=0.1)
    opt.step([g], grad_scale=1e30, max_grad_norm=1.0, skip_nonfinite=True)
    norm = math.hypot(1e200, 1e200) / 1e30
    assert opt.last_step.norm == pytest.approx(norm, rel=1e-15)
    assert not opt.last_step.skipped and opt.state_dict()["state"][0]["step"] == 1
    assert opt.last_step.factor == pytest.approx(1.0 / (norm + 1e-6) / 1e30, rel=1e-15)
    np.testing.assert_allclose(w[:2], [-0.1, 0.1], rtol=1e-6)   # Adam's first step: lr
    assert (w[2:] < 0).all()   # clipped to about 1e-200, far below eps: tiny steps
    assert adamc.global_norm([g]) == pytest.approx(math.hypot(1e200, 1e200), rel=1e-15)
    g[2] = np.inf   # a non-finite element still skips
    opt.step([g], skip_nonfinite=True)
    assert opt.last_step.skipped and opt.last_step.norm == math.inf


def test_an_inf_in_a_float32_gradient_copies_nothing():
    """Only float64 squares can overflow the double sum: an infinite sum
    over float32 gradients is an Inf element, decided without the rescaled
    second look (which copied every gradient to float64)."""
    import tracemalloc
    g = np.ones(2_000_000, np.float32)
    g[5] = np.inf
    opt = adamc.Adam([np.zeros_like(g)])
    tracemalloc.start()
    try:
        opt.step([g], skip_nonfinite=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert opt.last_step.skipped and peak < 1_000_000   # the gradient is 8 MB


def test_clip_grad_norm_multiplies_in_float32_and_rounds_once():
    """As the fused step (and torch's clip_grad_norm_): the factor stays a
    float32 (float64 for float64 gradients), not rounded to float16 first."""
    g16, g32 = np.full(4, 1000.0, np.float16), np.full(4, 1000.0, np.float32)
    norm = adamc.clip_grad_norm([g16, g32], 1e-5)
    coef = np.float32(1e-5 / (norm + 1e-6))
    np.testing.assert_array_equal(g16, (np.float32(1000.0) * coef).astype(np.float16))
    np.testing.assert_array_equal(g32, np.float32(1000.0) * coef)
    assert g16[0] != 0   # a factor rounded to float16 first gave 0


def test_defaults_are_torchs():
    s = adamc.LossScaler()
    assert (s.scale, s.growth_factor, s.backoff_factor, s.growth_interval) == \
        (65536.0, 2.0, 0.5, 2000)


@pytest.mark.parametrize("layout", [
    [(16384 * 9 + 5, np.float32)],                          # 9 whole chunks + a tail
    [(16384 * 3, np.float64), (16384 * 8 - 7, np.float32)],  # groups cut by a boundary
    [(100, np.float32), (16384 * 13, np.float64), (16384 * 2, np.float16),
     (16384 * 5 + 1, np.float32)],                        # chunks straddling tasks
])
def test_norm_chunks_summed_side_by_side_are_the_reference_bits(clean_env, variant, layout):
    """Every variant sums several whole chunks of one gradient side by side
    (norm.inc's sumsq_ways): each chunk keeps its own lanes and order, so
    the sum is bitwise the reference's, for any thread count."""
    rng = np.random.default_rng(7)
    gs = [(rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(dt)
          for n, dt in layout]
    want = reference.grad_sumsq(gs)
    os.environ["ADAMC_SERIAL_CUTOFF"] = "0"
    for threads in (1, 2, 3):
        adamc.set_num_threads(threads)
        assert adamc.global_norm(gs) == math.sqrt(want)


def test_global_norm_and_clip_grad_norm():
    rng = np.random.default_rng(6)
    gs = [rng.standard_normal(1000).astype(np.float32), rng.standard_normal((5, 5))]
    want = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in gs))
    assert adamc.global_norm(gs) == pytest.approx(want, rel=1e-14)
    assert adamc.global_norm(gs + [None]) == adamc.global_norm(gs)
    before = [g.copy() for g in gs]
    norm = adamc.clip_grad_norm(gs, 1.0)
    assert norm == pytest.approx(want, rel=1e-14)
    coef = 1.0 / (want + 1e-6)
    for g, b in zip(gs, before):
        np.testing.assert_array_equal(g, b * g.dtype.type(coef))
    assert adamc.global_norm(gs) == pytest.approx(1.0, rel=1e-6)
    # under the limit: untouched
    small = [np.full(4, 0.1)]
    assert adamc.clip_grad_norm(small, 1.0) == pytest.approx(0.2)
    np.testing.assert_array_equal(small[0], 0.1)
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        adamc.clip_grad_norm(gs, 0.0)
    with pytest.raises(TypeError, match=r"grads\[0\] must have dtype"):
        adamc.global_norm([np.zeros(3, np.int32)])


def test_against_torch_gradscaler_and_clip_grad_norm():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    init = rng.standard_normal(64).astype(np.float32)
    tp = torch.nn.Parameter(torch.from_numpy(init.copy()))
    topt = torch.optim.Adam([tp], lr=1e-2)
    w = init.copy()
    opt = adamc.Adam([w], lr=1e-2)
    scale = 1024.0
    for t in range(6):
        g = (rng.standard_normal(64) * 5).astype(np.float32)
        if t == 3:
            g[5] = np.inf
        scaled = g * np.float32(scale)
        tp.grad = torch.from_numpy(scaled.copy())
        tp.grad.mul_(1.0 / scale)  # GradScaler.unscale_
        finite = bool(torch.isfinite(tp.grad).all())
        torch.nn.utils.clip_grad_norm_([tp], 1.0)
        if finite:
            topt.step()
        opt.step([scaled], grad_scale=scale, max_grad_norm=1.0, skip_nonfinite=True)
        assert opt.last_step.skipped == (not finite)
    np.testing.assert_allclose(w, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_mlp_example_survives_skipped_fp16_steps():
    """examples/train_mlp.py --dtype float16 --loss-scaling --clip 1: the
    first steps overflow float16 and are skipped, the scale backs off, and
    training reaches float32's accuracy (within 1 point, 4 epochs)."""
    pytest.importorskip("sklearn")
    mlp = load_example("train_mlp")
    data = mlp.load_data(np.float32, 0)
    base = mlp.train("adamc", epochs=4, data=data, log=None)
    run = mlp.train("adamc", epochs=4, data=data, log=None, dtype=np.float16,
                    loss_scaling=True, clip=1.0)
    assert run["skipped"] >= 1 and run["skipped"] < run["steps"] // 10
    assert run["test_accuracy"][-1] >= base["test_accuracy"][-1] - 0.01


def test_checkpoints_carry_the_loss_scaler(tmp_path):
    w = np.ones(3, dtype=np.float32)
    opt, scaler = adamc.Adam([w]), adamc.LossScaler(init_scale=64.0, growth_interval=2)
    for g in ([1.0, 2.0, np.inf], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0]):
        scaler.step(opt, [np.array(g, dtype=np.float32) * np.float32(scaler.scale)])
    adamc.save_state(opt, tmp_path / "ck.npz", scaler=scaler)
    fresh_opt, fresh = adamc.Adam([w.copy()]), adamc.LossScaler()
    adamc.load_state(fresh_opt, tmp_path / "ck.npz", scaler=fresh)
    assert fresh.state_dict() == scaler.state_dict() == {
        "scale": 64.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2,
        "growth_tracker": 0}
    # a file without a scaler's state, into a scaler: refused, nothing changes
    adamc.save_state(opt, tmp_path / "plain.npz")
    before = fresh.state_dict()
    snap = snapshot(fresh_opt)
    with pytest.raises(ValueError, match="holds no loss scaler state"):
        adamc.load_state(fresh_opt, tmp_path / "plain.npz", scaler=fresh)
    assert fresh.state_dict() == before
    assert_unchanged(fresh_opt, snap)
    # the optimizer's own load ignores the scaler's state
    adamc.load_state(adamc.Adam([w.copy()]), tmp_path / "ck.npz")


# Found by a differential fuzzer of the fused step against torch (2026-12-02).

def test_the_smallest_loss_scale_survives_a_checkpoint(tmp_path):
    """After a long run of skipped steps the scale sits at the smallest loss
    scale, which was not a float32: saved and loaded (rounded to float32) it
    fell below the limit, the resumed step refused it and its own checkpoint
    did not load."""
    w = np.ones(3, np.float32)
    opt, scaler = adamc.Adam([w]), adamc.LossScaler()
    for _ in range(200):
        scaler.step(opt, [np.array([np.inf, 1, 1], np.float32)])
    floor = scaler.scale
    assert float(np.float32(floor)) == floor and np.isfinite(np.float32(1) / np.float32(floor))
    adamc.save_state(opt, tmp_path / "a.npz", scaler=scaler)
    opt2, scaler2 = adamc.Adam([w.copy()]), adamc.LossScaler()
    adamc.load_state(opt2, tmp_path / "a.npz", scaler=scaler2)
    assert scaler2.scale == floor
    assert scaler2.step(opt2, [np.ones(3, np.float32)])
    adamc.save_state(opt2, tmp_path / "b.npz", scaler=scaler2)
    adamc.load_state(adamc.Adam([w.copy()]), tmp_path / "b.npz", scaler=adamc.LossScaler())
    assert adamc.LossScaler(init_scale=floor).scale == floor


@pytest.mark.parametrize("module", [adamc, reference])
def test_a_float64_gradient_beyond_float32_counts_as_inf(module):
    """A finite float64 gradient of a float32 parameter beyond float32's range
    is Inf once the step converts it: the clipped step reported a finite
    norm, did not skip with skip_nonfinite, and wrote NaN."""
    w = np.ones(2, np.float32)
    opt = module.Adam([w], lr=1e-3)
    with np.errstate(all="ignore"):
        opt.step([np.array([3e39, 4e39])], max_grad_norm=1.0, skip_nonfinite=True)
    assert opt.last_step.skipped and opt.last_step.norm == np.inf
    assert np.array_equal(w, [1, 1]) and opt.state_dict()["state"] == {}
    with np.errstate(all="ignore"):   # a float64 parameter computes in float64: steps
        opt64 = module.Adam([np.ones(2)], lr=1e-3)
        opt64.step([np.array([3e39, 4e39])], max_grad_norm=1.0, skip_nonfinite=True)
    assert not opt64.last_step.skipped and opt64.last_step.norm == pytest.approx(5e39)
