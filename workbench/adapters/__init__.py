"""Hugging Face `transformers` recurrent LMs under the workbench hook contract (DESIGN: adapters).

`from_transformers(model_or_path)` wraps MambaForCausalLM, FalconMambaForCausalLM, Mamba2ForCausalLM,
RwkvForCausalLM, RecurrentGemmaForCausalLM, xLSTMForCausalLM, Qwen3NextForCausalLM, KimiLinearForCausalLM and
OlmoHybridForCausalLM and the Mamba-2 hybrids (Bamba, GraniteMoeHybrid, NemotronH, Falcon-H1), sharing
their parameters; see docs/adapters.md.
"""

from __future__ import annotations

from workbench.adapters.loading import (
    ADAPTERS,
    CheckpointNotFoundError,
    TransformersTokenizer,
    UnsupportedModelError,
    from_transformers,
)

__all__ = [
    "ADAPTERS",
    "CheckpointNotFoundError",
    "TransformersTokenizer",
    "UnsupportedModelError",
    "from_transformers",
]
