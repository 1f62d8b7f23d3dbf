"""Scoring engines: a probability for every behavior, for a batch of prompts and adapters."""

from behaviorlm.scoring.base import AdapterSpec, ScoreRequest, ScoreResult, ScoringEngine

__all__ = ["AdapterSpec", "ScoreRequest", "ScoreResult", "ScoringEngine"]
