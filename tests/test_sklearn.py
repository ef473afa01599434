"""adamc against scikit-learn's own Adam (skipped when scikit-learn is absent).

scikit-learn's AdamOptimizer uses the paper's epsilon-hat form, which is
adamc's eps_mode="hat"; its MLPs also hand float32 parameters float64
gradients and the reverse, which adamc converts in the kernel."""

import warnings

import numpy as np
import pytest

import adamc

pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.neural_network import _multilayer_perceptron as mlp_module  # noqa: E402
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer  # noqa: E402


class AdamcOptimizer(AdamOptimizer):
    """scikit-learn's Adam with the update done by adamc.Adam (what a client
    that keeps adamc inside an estimator would write)."""

    eps_mode = "hat"

    def update_params(self, params, grads):
        if not hasattr(self, "adamc"):
            self.adamc = adamc.Adam(params, lr=self.learning_rate_init,
                                    betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                                    eps_mode=self.eps_mode)
        self.adamc.step(grads)


def fit(estimator, X, y, optimizer):
    old = mlp_module.AdamOptimizer
    mlp_module.AdamOptimizer = optimizer
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_iter reached
            return estimator.fit(X, y)
    finally:
        mlp_module.AdamOptimizer = old


def weights(est):
    return est.coefs_ + est.intercepts_


def test_same_gradients_same_updates_as_sklearn():
    rng = np.random.default_rng(0)
    shapes = [(7, 5), (5,), (5, 3), (3,)]
    ps_a = [rng.standard_normal(s) for s in shapes]
    ps_b = [p.copy() for p in ps_a]
    theirs = AdamOptimizer(ps_a, learning_rate_init=3e-3, beta_1=0.85, beta_2=0.995,
                           epsilon=1e-6)
    mine = adamc.Adam(ps_b, lr=3e-3, betas=(0.85, 0.995), eps=1e-6, eps_mode="hat")
    for t in range(40):
        grads = [rng.standard_normal(s) * 10.0 ** rng.integers(-3, 2) for s in shapes]
        theirs.update_params(ps_a, grads)
        mine.step(grads)
        for a, b in zip(ps_a, ps_b):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15, err_msg=f"step {t}")


def test_mlp_classifier_trains_to_the_same_weights():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0

    def make():
        return MLPClassifier(hidden_layer_sizes=(64,), solver="adam", max_iter=15,
                             random_state=0, tol=0, n_iter_no_change=1000)
    ref = fit(make(), X, y, AdamOptimizer)
    hat = fit(make(), X, y, AdamcOptimizer)
    for a, b in zip(weights(ref), weights(hat)):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    # the default (torch's) form is a different optimizer: it ends elsewhere
    outside = type("Outside", (AdamcOptimizer,), {"eps_mode": "outside"})
    other = fit(make(), X, y, outside)
    assert max(np.abs(a - b).max() for a, b in zip(weights(ref), weights(other))) > 1e-4


class Float64Grads(AdamcOptimizer):
    """Gradients in float64 for float32 parameters, as a client computing
    its loss in float64 (or a scikit-learn version that does) hands them."""

    def update_params(self, params, grads):
        super().update_params(params, [g.astype(np.float64) for g in grads])


@pytest.mark.parametrize("optimizer", [AdamcOptimizer, Float64Grads])
def test_mlp_regressor_with_float32_input_needs_no_casts(optimizer):
    """float32 input makes float32 parameters; adamc steps them with float32
    or float64 gradients as they come (no copy, no cast by the client)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 8)).astype(np.float32)
    y = (X @ rng.standard_normal(8) + 0.1).astype(np.float32)

    def make():
        return MLPRegressor(hidden_layer_sizes=(16,), solver="adam", max_iter=20,
                            random_state=0, tol=0, n_iter_no_change=1000)
    ref = fit(make(), X, y, AdamOptimizer)
    mine = fit(make(), X, y, optimizer)
    assert all(w.dtype == np.float32 for w in weights(mine))
    for a, b in zip(weights(ref), weights(mine)):
        np.testing.assert_allclose(b, a, rtol=2e-3, atol=2e-4)
    assert mine.score(X, y) == pytest.approx(ref.score(X, y), abs=1e-3)
