"""Against torch.optim.Adam/AdamW when torch happens to be installed (never required)."""

import numpy as np
import pytest

import adamc

from _toolkit import random_array, random_like

torch = pytest.importorskip("torch")

CASES = [
    {},
    {"amsgrad": True},
    {"weight_decay": 0.1},
    {"maximize": True},
    {"betas": (0.0, 0.99)},
    {"amsgrad": True, "weight_decay": 0.05, "maximize": True},
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decoupled", [False, True], ids=["Adam", "AdamW"])
@pytest.mark.parametrize("kw", CASES, ids=lambda k: ",".join(k) or "default")
def test_matches_torch(rng, dtype, decoupled, kw):
    shapes = [(31,), (4, 5), ()]
    ps = [random_array(rng, s, dtype, "C") for s in shapes]
    tps = [torch.tensor(p.copy(), requires_grad=True) for p in ps]
    if decoupled:
        kw = dict(kw)
        kw.setdefault("weight_decay", 0.01)
        ours = adamc.AdamW(ps, lr=1e-2, **kw)
        theirs = torch.optim.AdamW(tps, lr=1e-2, foreach=False, **kw)
    else:
        ours = adamc.Adam(ps, lr=1e-2, **kw)
        theirs = torch.optim.Adam(tps, lr=1e-2, foreach=False, **kw)
    steps = 15
    for _ in range(steps):
        grads = [random_like(rng, p) for p in ps]
        for tp, g in zip(tps, grads):
            tp.grad = torch.from_numpy(g.copy())
        ours.step(grads)
        theirs.step()
    ulp = np.finfo(dtype).eps
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=16 * ulp * steps,
                                   atol=16 * ulp * steps)
    # the state_dict layouts line up
    tsd, osd = theirs.state_dict(), ours.state_dict()
    assert tsd["param_groups"][0]["params"] == osd["param_groups"][0]["params"]
    for i, e in tsd["state"].items():
        assert int(e["step"]) == osd["state"][i]["step"]
        np.testing.assert_allclose(osd["state"][i]["exp_avg_sq"], e["exp_avg_sq"].numpy(),
                                   rtol=16 * ulp * steps, atol=1e-30)
