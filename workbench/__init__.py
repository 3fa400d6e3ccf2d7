"""recurrent-workbench: see inside LSTMs, GRUs, minGRUs and Mamba-style models.

Imports are lazy (PEP 562): `import workbench` is cheap, and the heavy TransformerLens import
happens only when a model is first touched.
"""

from __future__ import annotations

from workbench.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "HookedRecurrentLM": "workbench.models",
    "HookedRecurrentSeq2Seq": "workbench.models",
    "RecurrentConfig": "workbench.models",
    "RecurrentCache": "workbench.models",
    "set_memory_budget": "workbench.models",
    "memory_budget": "workbench.models",
    "release_recording_buffers": "workbench.kernels.buffers",
    "load": "workbench.registry",
    "list_models": "workbench.registry",
    "train": "workbench.training.train",
    "TrainConfig": "workbench.training.train",
    "from_transformers": "workbench.adapters",
    "notebook_setup": "workbench.offline_figures",
    "record": "workbench.store",
    "open_store": "workbench.store",
    "ActivationStore": "workbench.store",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
