"""Scoring engines: a probability for every behavior, for a batch of prompts and adapters.

Engines (``transformers_engine``, ``vllm_engine``) and the readout (``readout``) import
torch / vLLM; import them from their modules. This package itself stays light.
"""

from behaviorlm.scoring.base import AdapterSpec, ScoreRequest, ScoreResult, ScoringEngine
from behaviorlm.scoring.factory import choose_kind, make_engine

__all__ = [
    "AdapterSpec",
    "ScoreRequest",
    "ScoreResult",
    "ScoringEngine",
    "choose_kind",
    "make_engine",
]
