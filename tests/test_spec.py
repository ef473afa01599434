"""The spec (adamc._spec) is the one declaration of the options: every entry
point takes each option with its declared default, each option reaches the C
loop, and the docs name them all."""

import inspect

import numpy as np
import pytest

import adamc
from adamc import _spec, reference
from adamc import _validation as V

OPTIONS = _spec.OPTIONS


@pytest.mark.parametrize("module", [adamc, reference])
@pytest.mark.parametrize("variant", ["Adam", "AdamW"])
def test_constructor_signatures_follow_the_spec(module, variant):
    sig = inspect.signature(getattr(module, variant))
    names = list(sig.parameters)
    assert names[0] == "params"
    for o in OPTIONS:
        if o.name in _spec.forced(variant):
            assert o.name not in names
            continue
        assert sig.parameters[o.name].default == o.default_for(variant)
        kind = sig.parameters[o.name].kind
        assert (kind is inspect.Parameter.POSITIONAL_OR_KEYWORD) == o.positional
    assert set(_spec.SYNONYMS) <= set(names)
    opt = getattr(module, variant)([np.zeros(2)])
    for o in OPTIONS:
        assert opt.defaults[o.name] == o.default_for(variant)
        assert opt.param_groups[0][o.name] == o.default_for(variant)


@pytest.mark.parametrize("module", [adamc, reference])
def test_functional_signature_follows_the_spec(module):
    sig = inspect.signature(module.adam_step)
    defaults = dict(zip(_spec.Hypers._fields, [
        d for o in OPTIONS
        for d in (o.default if o.kind == "betas" else (o.default_for("adam_step"),))]))
    for name in _spec.FUNCTIONAL_NAMES:
        assert sig.parameters[name].default == defaults[name]
    for o in OPTIONS:
        assert (o.name in sig.parameters) == (o.functional and o.kind != "betas")


def test_docs_name_every_option():
    for o in OPTIONS:
        assert f"{o.name} :" in adamc.Adam.__doc__
        assert o.name in adamc.adam_step.__doc__ or o.kind == "betas" or not o.functional
    assert "beta1" in adamc.adam_step.__doc__


def test_option_entries_sit_in_the_parameters_section():
    """inspect.getdoc (help(), Sphinx, numpydoc) dedents a docstring by its
    least indented line: the generated entries used to start at column 0,
    which left "Parameters" indented and every option outside the section
    (found by an independent review)."""
    lines = inspect.getdoc(adamc.Adam).splitlines()
    assert "Parameters" in lines and "Notes" in lines
    section = lines[lines.index("Parameters"):lines.index("Notes")]
    for o in OPTIONS:
        assert any(line.startswith(f"{o.name} : ") for line in section), o.name


def test_defaults_and_examples_pass_their_own_checks():
    for variant in _spec.VARIANTS[:2]:
        h = V.group_values(_spec.defaults(variant))
        assert isinstance(h, _spec.Hypers)
    for o in OPTIONS:
        assert o.example is not None and o.example != o.default, o.name
        V.group_values({**_spec.defaults("Adam"), o.name: o.example})


# Storage options change a step only with storage they act on: (parameter
# dtype, the options they are compared under).
STORAGE_SETUP = {
    "master_weights": (np.float16, {}),
    "state_dtype": (np.float32, {}),   # (its example, bfloat16, needs ml_dtypes)
    "min_8bit_size": (np.float32, {"state_dtype": "int8"}),  # 300 elements: int8 at 300
    "quant_map": (np.float32, {"state_dtype": "int8", "min_8bit_size": 256}),
    "stochastic_rounding": (np.float16, {"master_weights": False, "seed": 1}),
    "seed": (np.float16, {"master_weights": False, "stochastic_rounding": True, "seed": 0}),
}


def run(module, options, functional=False, dtype=np.float64):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(300).astype(dtype)
    grads = [rng.standard_normal(300) * s for s in (4.0, 1.0, 0.25)]  # v shrinks: amsgrad bites
    if functional:
        kw = dict(options)
        if "betas" in kw:
            kw["beta1"], kw["beta2"] = kw.pop("betas")
        m, v, x = np.zeros(300), np.zeros(300), np.zeros(300)
        for t, g in enumerate(grads, 1):
            module.adam_step(p, g, m, v, step=t, max_exp_avg_sq=x, **kw)
        return p
    opt = module.Adam([p], **options)
    for g in grads:
        opt.step([g])
    return p


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
@pytest.mark.parametrize("functional", [False, True])
def test_each_option_reaches_the_kernel(option, functional):
    """Changing one option (to the spec's example) changes the step, in the
    compiled kernel exactly as in the reference (baseline kernel: bitwise)."""
    from adamc import _kernels
    if functional and (option.storage or not option.functional):
        pytest.skip("storage through adam_step: tests/test_mixed_precision.py")
    if option.example == "bfloat16":
        pytest.importorskip("ml_dtypes")
    base = {"weight_decay": 0.1, "eps": 0.1}  # so that decay and eps forms matter
    dtype, extra = STORAGE_SETUP.get(option.name, (np.float64, {}))
    base.update(extra)
    changed = {**base, option.name: option.example}
    old = _kernels.kernel_name()
    _kernels.use_variant("baseline")
    try:
        a, b = run(adamc, base, functional, dtype), run(adamc, changed, functional, dtype)
    finally:
        _kernels.use_variant(old)
    assert not np.array_equal(a, b), option.name
    np.testing.assert_array_equal(b, run(reference, changed, functional, dtype))
