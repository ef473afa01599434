"""The scripts in examples/ run, at reduced size, and show what they claim.

Skipped when examples/ is absent (tests run from an installed copy) and,
per test, when the example's optional dependency (scikit-learn, PyTorch) is
not installed.
"""

import numpy as np
import pytest

import adamc

from _toolkit import EXAMPLES, exact, load_example

if not EXAMPLES.is_dir():
    pytest.skip("examples/ not found: tests run from outside the source tree",
                allow_module_level=True)


# Six epochs instead of twenty: over seeds 0-11 the held-out accuracy after
# six epochs was 96.0% at worst (seed 0, the one tested), so 95% leaves a
# margin of four of the 450 held-out images for BLAS and platform differences.
MLP_EPOCHS = 6
MLP_MIN_ACCURACY = 0.95

# The two loss curves differ only by rounding: bitwise equal with the
# baseline kernel, which performs the reference's operations in its order;
# a few ulp apart with the FMA kernels (observed: 8e-8 relative after six
# epochs in float32, 4e-16 in float64).  The bounds leave two orders of
# magnitude above that and below a real difference in the update: eps 1e-7
# instead of 1e-8 moves the losses by 0.7%, a learning rate 0.1% higher by
# 1.4%.
LOSS_RTOL = {"float32": 1e-5, "float64": 1e-13}


@pytest.fixture(scope="module")
def train_mlp():
    pytest.importorskip("sklearn")
    return load_example("train_mlp")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mlp_adamc_matches_reference_and_learns(train_mlp, capsys, dtype):
    results = train_mlp.main(["--optimizer", "both", "--epochs", str(MLP_EPOCHS),
                              "--dtype", dtype])
    ours, ref = results["runs"]["adamc"], results["runs"]["reference"]

    for run in (ours, ref):
        assert len(run["losses"]) == MLP_EPOCHS
        assert run["steps"] == MLP_EPOCHS * 43  # 1347 training images in batches of 32
        assert run["test_accuracy"][-1] >= MLP_MIN_ACCURACY
        assert run["losses"][-1] < 0.25 * run["losses"][0]
        assert all(p.dtype == dtype for p in run["params"].values())

    if exact():
        assert ours["losses"] == ref["losses"]
        for name, p in ours["params"].items():
            np.testing.assert_array_equal(p, ref["params"][name], err_msg=name)
    else:
        np.testing.assert_allclose(ours["losses"], ref["losses"], rtol=LOSS_RTOL[dtype], atol=0)
    assert ours["test_accuracy"] == ref["test_accuracy"]

    out = capsys.readouterr().out
    assert (f"max |loss(adamc) - loss(reference)| over {MLP_EPOCHS} epochs: "
            f"{results['max_loss_diff']:.3g}\n") in out
    assert f"adamc     epoch {MLP_EPOCHS}/{MLP_EPOCHS} [{'#' * 20}] loss " in out
    assert f"reference epoch 1/{MLP_EPOCHS} [" in out


def test_mlp_is_deterministic(train_mlp):
    data = train_mlp.load_data(np.float32, seed=3)
    first = train_mlp.train("adamc", epochs=1, seed=3, data=data, log=None)
    again = train_mlp.train("adamc", epochs=1, seed=3, data=data, log=None)
    assert first["losses"] == again["losses"]
    other = train_mlp.train("adamc", epochs=1, seed=4, data=data, log=None)
    assert other["losses"] != first["losses"]


def test_mlp_gradients_match_finite_differences(train_mlp):
    # The hand-written backward pass, checked in float64 on a tiny network.
    rng = np.random.default_rng(0)
    params = train_mlp.init_params((5, 4, 3, 3), rng, np.float64)
    X = rng.standard_normal((6, 5))
    y = rng.integers(0, 3, 6)

    def loss_of(params):
        return train_mlp.softmax_cross_entropy(train_mlp.forward(params, X)[0], y)[0]

    logits, activations = train_mlp.forward(params, X)
    _, dlogits = train_mlp.softmax_cross_entropy(logits, y)
    grads = train_mlp.backward(params, activations, dlogits)
    assert grads.keys() == params.keys()
    h = 1e-6
    for name, p in params.items():
        numeric = np.empty_like(p)
        for i in np.ndindex(p.shape):
            saved = p[i]
            p[i] = saved + h
            up = loss_of(params)
            p[i] = saved - h
            down = loss_of(params)
            p[i] = saved
            numeric[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def test_mlp_plot(train_mlp, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "losses.png"
    train_mlp.main(["--optimizer", "reference", "--epochs", "1", "--plot", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# PyTorch: the zero-copy interop example.

TORCH_STEPS = 100


def test_torch_example_without_torch_skips_with_status_0(capsys):
    module = load_example("torch_interop")
    module.torch = None  # as if the import had failed
    assert module.main([]) == 0
    assert "PyTorch is not installed" in capsys.readouterr().out


@pytest.fixture
def torch_one_thread():
    """PyTorch with one intra-op thread, restored afterwards.

    The example's network is far too small to gain from threads, and on a
    busy two-core machine torch's spinning worker threads made these
    steps ten to twenty times slower.  Results do not depend on it.
    """
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_example_matches_torch_optim(torch_one_thread, capsys, dtype):
    module = load_example("torch_interop")
    r = module.compare(steps=TORCH_STEPS, dtype=dtype)
    assert len(r["adamc_losses"]) == len(r["torch_losses"]) == TORCH_STEPS
    rtol, atol = module.tolerance(np.dtype(dtype), TORCH_STEPS)
    # The weights moved far beyond the tolerance, so agreeing within it
    # means adamc really updated the model (a step on copies of the weights
    # would leave them at their initial values).
    initial = [p.detach().numpy() for p in module.make_problem(dtype=dtype)[0].parameters()]
    moved = max(float(np.max(np.abs(t - p0))) for t, p0 in zip(r["torch_params"], initial))
    assert moved > 100 * atol
    for a, t in zip(r["adamc_params"], r["torch_params"]):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, t, rtol=rtol, atol=atol)

    assert module.main(["--steps", "20", "--dtype", dtype]) == 0
    assert "allclose with rtol" in capsys.readouterr().out


def test_torch_example_rejects_unshareable_params(torch_one_thread):
    torch = torch_one_thread
    module = load_example("torch_interop")
    with pytest.raises(ValueError, match="float16, bfloat16, float32 and float64"):
        module.check_params([torch.zeros(3, dtype=torch.int32)])
    module.check_params([torch.zeros(3, dtype=torch.float16)])  # 16-bit: stepped as is
    with pytest.raises(ValueError, match="not contiguous"):
        module.check_params([torch.zeros(10)[::2]])
    module.check_params([torch.zeros(3, 4), torch.zeros(3, 4).t()])  # C and F order


# 8-bit optimizer state (issue 13): examples/int8_state.py.

@pytest.fixture(scope="module")
def int8_state():
    pytest.importorskip("sklearn")
    return load_example("int8_state")


# Held-out accuracy is counted in images (450: one is 0.22 points), so the
# goal, within 0.5 points of float32 state, allows two images.  Seed 0 is the
# README's run; seed 6 trains dead ReLU units in W2 whose zero gradients make
# 8-bit state blow up if v rounds to 0 under a nonzero m (docs/int8-state.md,
# "A hazard of the format"): with plain nearest rounding seed 6 ended at 4.4%;
# exp_avg_sq's codes never being 0 is what this test holds.
# The lookup-free map (quant_map="pow2", "int8-pow2") is held to the same goal.
@pytest.mark.parametrize("state", ["int8", "int8-pow2"])
@pytest.mark.parametrize("seed", [0, 6])
def test_mlp_int8_state_reaches_float32_accuracy(int8_state, seed, state):
    full = int8_state.digits("float32", seed=seed)
    eight = int8_state.digits(state, seed=seed)
    assert full["test_accuracy"][-1] >= 0.97
    assert abs(eight["test_accuracy"][-1] - full["test_accuracy"][-1]) <= 0.005 + 1e-12
    # the two large weight matrices really stepped with 8-bit state
    opt = adamc.Adam({k: v.copy() for k, v in eight["params"].items()}, state_dtype="int8")
    opt.step({k: np.ones_like(v) for k, v in eight["params"].items()})
    kinds = {k: v["exp_avg"].dtype for k, v in zip(eight["params"],
                                                      opt.state_dict()["state"].values())}
    assert kinds == {"W1": np.uint8, "b1": np.float32, "W2": np.uint8, "b2": np.float32,
                     "W3": np.float32, "b3": np.float32}


@pytest.mark.parametrize("state", ["int8", "int8-pow2"])
def test_least_squares_int8_state_reaches_float32_loss(int8_state, state):
    full = int8_state.least_squares("float32")
    eight = int8_state.least_squares(state)
    # both at the noise floor, 0.01 * (1 - 64/512), far below the start (~70)
    assert full["losses"][0] > 50
    assert 0.0085 < full["losses"][-1] < 0.009
    assert abs(eight["losses"][-1] / full["losses"][-1] - 1) <= 0.01
    assert eight["state_nbytes"] <= 0.27 * full["state_nbytes"]


def test_int8_state_main_and_plot(int8_state, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "int8.png"
    r = int8_state.main(["--epochs", "2", "--steps", "50", "--plot", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(r["digits"]) == set(r["least_squares"]) == {"float32", "int8", "int8-pow2"}
    text = capsys.readouterr().out
    assert "least squares: int8 state's final loss" in text
    assert "least squares: int8-pow2 state's final loss" in text


def test_mlp_command_line_takes_int8_state(train_mlp):
    r = train_mlp.main(["--state", "int8", "--epochs", "1"])["runs"]["adamc"]
    data = train_mlp.load_data(np.float32, 0)
    eight = train_mlp.train("adamc", epochs=1, data=data, log=None, state_dtype="int8")
    full = train_mlp.train("adamc", epochs=1, data=data, log=None)
    assert r["losses"] == eight["losses"] != full["losses"]
