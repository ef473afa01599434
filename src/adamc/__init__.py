"""adamc: fused Adam/AdamW optimizer steps for NumPy arrays, in C."""

# _runtime loads the compiled extension (with the OpenMP wait policy it
# needs), so it comes before anything that imports _kernels.
from ._runtime import cpu_info  # isort: skip
from . import interop, reference
from ._kernels import get_num_threads, set_num_threads
from .checkpoint import load_state, save_state
from .optim import Adam, AdamW, adam_step
from .training import LossScaler, clip_grad_norm, global_norm

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "AdamW",
    "adam_step",
    "LossScaler",
    "global_norm",
    "clip_grad_norm",
    "reference",
    "interop",
    "set_num_threads",
    "get_num_threads",
    "cpu_info",
    "save_state",
    "load_state",
    "__version__",
]
