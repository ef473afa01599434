"""The one declaration of adamc's hyperparameters and state slots.

Everything else reads these tables: the constructors' signatures and
docstrings (``_base``), the checks (``_validation``), the reference math
(``reference``), the C struct the shim fills (``_kernels.pyx``:
``_fill_hyper``), ``__main__`` and the tests' option lists.  To add an
option, see ARCHITECTURE.md, "To add an option".
"""

from __future__ import annotations

import inspect
import textwrap
from collections import namedtuple
from typing import Any, NamedTuple

__all__ = ["OPTIONS", "SLOTS", "EPS_MODES", "Hypers", "Option", "Slot"]

#: Where epsilon enters the denominator, in the C enum's order (adamc.h).
EPS_MODES = ("outside", "inside", "hat")

#: Timesteps stay far from int64 overflow (t + 1 is computed in C).
MAX_STEP = 2**62

#: The classes (and the functional step) that take options.
VARIANTS = ("Adam", "AdamW", "adam_step")


class Option(NamedTuple):
    """One hyperparameter of a param group.

    ``kind`` names its rule, which ``_validation._check_option`` applies:
    ``"lr"`` (a number >= 0 or a schedule), ``"real"`` (finite, >= 0),
    ``"betas"`` (two reals in [0, 1)), ``"bool"``, ``"optbool"`` (a bool or
    None), ``"seed"`` (an int in [0, 2**64) or None), ``"count"`` (an int in
    [0, 2**62)), ``"choice"`` (one of ``choices``).
    """

    name: str
    kind: str
    default: Any
    doc: str
    choices: tuple = ()
    positional: bool = False        # may be passed by position to the classes
    defaults: dict = {}             # per-variant default, where it differs
    forced: dict = {}               # per-variant value the user cannot change
    synonyms: tuple = ()            # (old keyword, its meaning) pairs
    example: Any = None             # a value that changes a step (tests/test_spec.py)
    functional: bool = True         # a keyword of adam_step (else its buffers say it)
    storage: bool = False           # about storage and rounding, not the update's math

    def default_for(self, variant):
        return self.forced.get(variant, self.defaults.get(variant, self.default))


OPTIONS = (
    Option("lr", "lr", 1e-3, positional=True, example=0.02, doc=(
        "Learning rate, or a schedule ``lr(step) -> float`` called once per "
        "step with the timestep t (1-based) of the parameters it applies to.")),
    Option("betas", "betas", (0.9, 0.999), positional=True, example=(0.5, 0.9), doc=(
        "Decay rates of the first and second moment estimates, in [0, 1).")),
    Option("eps", "real", 1e-8, positional=True, example=0.5, doc=(
        "Added to the denominator for numerical stability (see ``eps_mode``).")),
    Option("weight_decay", "real", 0.0, positional=True, defaults={"AdamW": 1e-2},
           example=0.3, doc=(
        "L2 penalty added to the gradient, or with ``decoupled_weight_decay`` "
        "a multiplicative decay ``p *= 1 - lr * weight_decay`` (AdamW).")),
    Option("amsgrad", "bool", False, example=True, doc=(
        "Use the running maximum of the second moment (Reddi et al. 2018).")),
    Option("maximize", "bool", False, example=True,
           doc="Maximize the objective (negate the gradient)."),
    Option("decoupled_weight_decay", "bool", False, forced={"AdamW": True}, example=True,
           doc=(
        "Apply weight decay as AdamW does (Loshchilov & Hutter 2019).")),
    Option("bias_correction", "bool", True, example=False, doc=(
        "Divide the moments by ``1 - beta^t``; False drops both corrections.")),
    Option("eps_mode", "choice", "outside", choices=EPS_MODES, example="hat",
           synonyms=(("eps_inside_sqrt", "inside"),), doc=(
        "``\"outside\"``: ``sqrt(v_hat) + eps`` (torch; Kingma & Ba 2015, "
        "Algorithm 1).  ``\"inside\"``: ``sqrt(v_hat + eps)``.  ``\"hat\"``: "
        "the paper's epsilon-hat form that Keras, TensorFlow and scikit-learn "
        "use, ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``.  "
        "``eps_inside_sqrt=True`` is accepted as a synonym for "
        "``eps_mode=\"inside\"``.")),
    Option("master_weights", "optbool", None, example=False, functional=False, storage=True,
           doc=(
        "Keep a float32 copy of each 16-bit parameter (state slot "
        "``master_param``), step it, and write its rounded value into the "
        "parameter in the same pass.  None: True for float16/bfloat16 "
        "parameters; True is an error for float32/float64 ones.")),
    Option("state_dtype", "choice", None,
           choices=(None, "float32", "bfloat16", "float16", "float64", "int8"),
           example="bfloat16", functional=False, storage=True, doc=(
        "Storage of ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``): "
        "\"float32\", \"bfloat16\" or \"float16\".  None: the parameter's "
        "dtype for float32/float64 parameters, float32 for 16-bit ones.  "
        "float64 parameters keep float64 state (\"float64\" is for them only).  "
        "\"int8\": 8-bit blockwise-quantized moments (uint8 codes of the dynamic "
        "maps, one float32 scale per block of 256 elements, as bitsandbytes' "
        "Adam8bit; docs/int8-state.md) for parameters of at least "
        "``min_8bit_size`` elements, float32 state for smaller ones; not with "
        "amsgrad.")),
    Option("min_8bit_size", "count", 4096, example=300, functional=False, storage=True, doc=(
        "With state_dtype=\"int8\": parameters with fewer elements (or fewer "
        "than one block, 256) keep float32 moments, as bitsandbytes' "
        "min_8bit_size.")),
    Option("quant_map", "choice", "dynamic", choices=("dynamic", "pow2"), example="pow2",
           storage=True, doc=(
        "With state_dtype=\"int8\": the map the 8-bit codes index.  "
        "\"dynamic\": bitsandbytes' dynamic maps (map version 1; its and torchao's "
        "layout as it is).  \"pow2\": map version 2, a float8-like code read off "
        "the value's float32 bits (8 exponent bits, 3 mantissa bits), with no "
        "table: a faster step, the same blocks and scales (docs/int8-state.md); "
        "adamc.interop converts between the two.  Ignored for other state.")),
    Option("stochastic_rounding", "bool", False, example=True, storage=True, doc=(
        "Round every value written to 16 bits (parameters without master "
        "weights, 16-bit state) stochastically instead of to nearest even: "
        "a pure function of (seed, parameter index, step, element index).")),
    Option("seed", "seed", None, example=12345, storage=True, doc=(
        "The stochastic rounding seed, an int in [0, 2**64); None draws one "
        "when the optimizer is built (state_dict records it).")),
)

#: Storage dtypes by name: the 16-bit ones are rounded to, float32/float64 computed in.
SIXTEEN_BIT = ("float16", "bfloat16")
#: 8-bit blockwise state (state_dtype="int8"): elements per block (one float32
#: scale each), and the version of the dynamic maps the codes index
#: (reference.dynamic_map; recorded in state_dicts and checkpoints).
QUANT_BLOCK = 256
QUANT_MAP_VERSION = 1
#: The maps of the quant_map option, by name: their versions (2: the
#: lookup-free "pow2" map; reference.quantize_blockwise's map_version).
QUANT_MAPS = {"dynamic": QUANT_MAP_VERSION, "pow2": 2}
STORAGE = ("float16", "bfloat16", "float32", "float64")

OPTION = {o.name: o for o in OPTIONS}
#: Old keywords accepted as another way to set an option: name -> (option, value when True).
SYNONYMS = {syn: (o.name, val) for o in OPTIONS for syn, val in o.synonyms}

#: torch.optim.Adam's keywords with no counterpart in adamc, and why: the
#: TypeError for one of them says so.
TORCH_ONLY = {
    "foreach": "adamc's step is always one fused pass over each array",
    "fused": "adamc's step is always one fused pass over each array",
    "capturable": "it is for CUDA graphs",
    "differentiable": "adamc steps NumPy arrays, outside any autograd graph",
}


def _hyper_fields():
    for o in OPTIONS:
        yield from (("beta1", "beta2") if o.kind == "betas" else (o.name,))


#: One param group's validated hyperparameters (``_validation.group_values``):
#: the OPTIONS in order, ``betas`` split into ``beta1`` and ``beta2``; ``lr``
#: a float, or the schedule itself when it is callable.
Hypers = namedtuple("Hypers", tuple(_hyper_fields()))

#: The functional step's keyword names for the options (``betas`` split);
#: adam_step takes the storage options from its buffers instead.
FUNCTIONAL_NAMES = tuple(f for f in Hypers._fields
                         if f not in [o.name for o in OPTIONS if not o.functional])


class Slot(NamedTuple):
    """One per-parameter state buffer: its name in state_dicts and
    checkpoints, when it exists (``needs``: "always", "amsgrad",
    "master" or "int8": 8-bit state), its dtype ("state": the resolved state_dtype; "float32") and
    how it starts ("zeros", or "param": the parameter's value) and its
    shape: the parameter's shape and memory order, or ("blocks", the scales
    of 8-bit state) one float32 per QUANT_BLOCK elements."""

    name: str
    needs: str
    dtype: str
    init: str
    doc: str
    shape: str = "param"    # or "blocks": one value per QUANT_BLOCK elements, 1-D


SLOTS = (
    Slot("exp_avg", "always", "state", "zeros", "first moment estimate m"),
    Slot("exp_avg_sq", "always", "state", "zeros", "second moment estimate v"),
    Slot("max_exp_avg_sq", "amsgrad", "state", "zeros", "running maximum of v (amsgrad)"),
    Slot("master_param", "master", "float32", "param", "float32 master copy of a 16-bit parameter"),
    Slot("exp_avg_absmax", "int8", "float32", "zeros",
         "per-block scale of the 8-bit exp_avg codes", "blocks"),
    Slot("exp_avg_sq_absmax", "int8", "float32", "zeros",
         "per-block scale of the 8-bit exp_avg_sq codes", "blocks"),
)
#: The 8-bit slots and the slot holding their scales.
SCALE_SLOT = {"exp_avg": "exp_avg_absmax", "exp_avg_sq": "exp_avg_sq_absmax"}
SLOT_NAMES = tuple(s.name for s in SLOTS)
SLOT = {s.name: s for s in SLOTS}


def uses_master(param_dtype, hypers):
    """Whether a parameter of this dtype (name) keeps a float32 master copy."""
    if hypers.master_weights is None:
        return param_dtype in SIXTEEN_BIT
    return bool(hypers.master_weights)


def holds_8bit(size, min_8bit_size):
    """Whether a tensor of ``size`` elements gets 8-bit state: at least
    ``min_8bit_size`` elements and one block."""
    return size >= max(min_8bit_size, QUANT_BLOCK)


def state_dtype_for(param_dtype, hypers, size=None):
    """The moments' storage dtype (name) for a parameter of this dtype and
    ``size`` elements (None: large): "int8" falls back to float32 below
    ``min_8bit_size`` elements or one block."""
    if hypers.state_dtype == "int8" and size is not None \
            and not holds_8bit(size, hypers.min_8bit_size):
        return "float32"
    if hypers.state_dtype is not None:
        return hypers.state_dtype
    return "float32" if param_dtype in SIXTEEN_BIT else param_dtype


def nblocks(size):
    """The number of QUANT_BLOCK blocks (the last may be shorter) of size elements."""
    return -(-int(size) // QUANT_BLOCK)


def slots_for(hypers, param_dtype="float32", size=None):
    """{slot name: dtype name} of the slots a parameter of this dtype and
    size stepping with ``hypers`` needs."""
    state = state_dtype_for(param_dtype, hypers, size)
    on = {"always": True, "amsgrad": hypers.amsgrad,
          "master": uses_master(param_dtype, hypers), "int8": state == "int8"}
    return {s.name: (state if s.dtype == "state" else s.dtype)
            for s in SLOTS if on[s.needs]}


def defaults(variant):
    """{option: default} for one of VARIANTS."""
    return {o.name: o.default_for(variant) for o in OPTIONS}


def forced(variant):
    """{option: value} the variant fixes."""
    return {o.name: o.forced[variant] for o in OPTIONS if variant in o.forced}


def signature(variant):
    """The constructor signature of Adam/AdamW: ``(params, lr, betas, eps,
    weight_decay, *, amsgrad, ...)``, the synonyms keyword-only at the end."""
    P = inspect.Parameter
    params = [P("params", P.POSITIONAL_OR_KEYWORD)]
    for o in OPTIONS:
        if o.name in forced(variant):
            continue
        kind = P.POSITIONAL_OR_KEYWORD if o.positional else P.KEYWORD_ONLY
        params.append(P(o.name, kind, default=o.default_for(variant)))
    params += [P(syn, P.KEYWORD_ONLY, default=None) for syn in SYNONYMS]
    return inspect.Signature(params)


def functional_signature():
    """adam_step's signature: the buffers, ``step``, then every option as a
    keyword (``betas`` as ``beta1``, ``beta2``), the synonyms last."""
    P = inspect.Parameter
    params = [P(n, P.POSITIONAL_OR_KEYWORD)
              for n in ("param", "grad", "exp_avg", "exp_avg_sq")]
    params += [P("step", P.KEYWORD_ONLY), P("max_exp_avg_sq", P.KEYWORD_ONLY, default=None),
               P("master_param", P.KEYWORD_ONLY, default=None),
               P("exp_avg_absmax", P.KEYWORD_ONLY, default=None),
               P("exp_avg_sq_absmax", P.KEYWORD_ONLY, default=None)]
    for o in OPTIONS:
        if not o.functional:
            continue
        d = o.default_for("adam_step")
        if o.kind == "betas":
            params += [P("beta1", P.KEYWORD_ONLY, default=d[0]),
                       P("beta2", P.KEYWORD_ONLY, default=d[1])]
        else:
            params.append(P(o.name, P.KEYWORD_ONLY, default=d))
    params += [P(syn, P.KEYWORD_ONLY, default=None) for syn in SYNONYMS]
    return inspect.Signature(params)


def parameters_doc(variant, indent="    "):
    """The numpydoc "Parameters" entries of the options, for docstrings,
    each line indented as the class docstring's own lines are (so that
    ``inspect.getdoc`` keeps them inside the "Parameters" section)."""
    lines = []
    for o in OPTIONS:
        if o.name in forced(variant):
            continue
        default = o.default_for(variant)
        kind = {"lr": "float or callable", "betas": "(float, float)", "real": "float",
                "bool": "bool", "choice": "str or None" if None in o.choices else "str",
                "optbool": "bool or None", "seed": "int or None", "count": "int"}[o.kind]
        lines.append(f"{indent}{o.name} : {kind}, default {default!r}")
        lines.append(textwrap.fill(o.doc, 79, initial_indent=indent + "    ",
                                   subsequent_indent=indent + "    ", break_on_hyphens=False))
    return "\n".join(lines)


# ----------------------------------------------------------------------
# The engine protocol: the status codes an engine's step(grads, groups)
# returns to the optimizer (_base.py), which resolves each and steps again.
# Both engines speak it: _kernels.Engine (compiled) and reference.Engine.

OK = 0            #: stepped
GRADS_LIST = 6    #: grads is not a list of one entry per parameter: grads_list, step again
NEED_GROUPS = 1   #: the group list or a hyperparameter object changed: validate, set_groups
BAD_PARAM = 2     #: parameter ``engine.bad_index`` changed or is invalid: raise
BAD_GRAD = 3      #: gradient ``engine.bad_index`` fails a check: raise
NEED_LR = 4       #: schedules to call: ``engine.wanted_lrs()`` -> set_lrs
NEED_STATE = 5    #: ``engine.stateless()`` step for the first time (or gain amsgrad): set_states
MEASURED = 7      #: (measure=True) checked, nothing changed; ``engine.sumsq`` holds the
                  #: gradients' sum of squares for the fused step's norm
