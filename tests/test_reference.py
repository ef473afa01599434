"""The reference itself, checked by hand against Kingma & Ba 2015, Algorithm 1."""

import math

import numpy as np
import pytest

from adamc import reference


def algorithm1(theta, grads, alpha, beta1, beta2, eps, wd=0.0, decoupled=False,
               amsgrad=False):
    """Scalar Python floats, one element, literally as the paper (and
    Loshchilov & Hutter 2019 / Reddi et al. 2018) write it."""
    m = v = vmax = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        if decoupled:
            theta = theta * (1 - alpha * wd)
        elif wd:
            g = g + wd * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v)
        m_hat = m / (1 - beta1**t)
        v_hat = (vmax if amsgrad else v) / (1 - beta2**t)
        theta = theta - alpha * m_hat / (math.sqrt(v_hat) + eps)
        out.append(theta)
    return out


@pytest.mark.parametrize(
    "kw",
    [{}, {"wd": 0.1}, {"wd": 0.1, "decoupled": True}, {"amsgrad": True}],
    ids=["adam", "l2", "adamw", "amsgrad"],
)
def test_reference_equals_algorithm1(kw):
    grads = [0.5, -1.25, 2.0, 0.125, -0.75, 3.0]
    alpha, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    expected = algorithm1(1.5, grads, alpha, b1, b2, eps, **kw)
    p = np.array([1.5])
    m, v, vmax = np.zeros(1), np.zeros(1), np.zeros(1)
    for t, g in enumerate(grads, start=1):
        reference.adam_step(
            p, np.array([g]), m, v, step=t, lr=alpha, beta1=b1, beta2=b2, eps=eps,
            weight_decay=kw.get("wd", 0.0), decoupled_weight_decay=kw.get("decoupled", False),
            amsgrad=kw.get("amsgrad", False), max_exp_avg_sq=vmax,
        )
        # torch's arrangement (lerp, sqrt(v)/sqrt(bc2)) differs only by rounding
        assert p[0] == pytest.approx(expected[t - 1], rel=1e-13, abs=1e-15)


def test_first_step_moves_by_lr():
    # At t = 1 the bias-corrected update is lr * g / (|g| + eps'): a sign step.
    p = np.array([0.0, 0.0, 0.0])
    g = np.array([3.0, -0.002, 0.0])
    with np.errstate(invalid="ignore"):
        reference.adam_step(p, g, np.zeros(3), np.zeros(3), step=1, lr=0.1, eps=0.0)
    np.testing.assert_allclose(p[:2], [-0.1, 0.1], rtol=1e-15)
    assert np.isnan(p[2])  # 0 / 0 with eps = 0, as in torch


def test_options_formulas():
    """bias_correction=False and eps_inside_sqrt, element by element."""
    g, lr, b1, b2, eps = 0.3, 0.05, 0.8, 0.9, 1e-3
    m = (1 - b1) * g
    v = (1 - b2) * g * g
    p = np.array([1.0])
    reference.adam_step(p, np.array([g]), np.zeros(1), np.zeros(1), step=1, lr=lr,
                        beta1=b1, beta2=b2, eps=eps, bias_correction=False)
    assert p[0] == pytest.approx(1.0 - lr * m / (math.sqrt(v) + eps), rel=1e-14)
    p = np.array([1.0])
    reference.adam_step(p, np.array([g]), np.zeros(1), np.zeros(1), step=1, lr=lr,
                        beta1=b1, beta2=b2, eps=eps, eps_inside_sqrt=True)
    m_hat, v_hat = m / (1 - b1), v / (1 - b2)
    assert p[0] == pytest.approx(1.0 - lr * m_hat / math.sqrt(v_hat + eps), rel=1e-14)
    p = np.array([1.0])
    reference.adam_step(p, np.array([g]), np.zeros(1), np.zeros(1), step=1, lr=lr,
                        beta1=b1, beta2=b2, eps=eps, maximize=True)
    assert p[0] == pytest.approx(1.0 + lr * m_hat / (math.sqrt(v_hat) + eps), rel=1e-14)


def test_float32_math_stays_float32():
    p = np.ones(4, dtype=np.float32)
    m = np.zeros(4, dtype=np.float32)
    v = np.zeros(4, dtype=np.float32)
    reference.adam_step(p, np.full(4, 0.5, np.float32), m, v, step=1)
    assert p.dtype == m.dtype == v.dtype == np.float32
    assert m[0] == np.float32(0.1) * np.float32(0.5)
