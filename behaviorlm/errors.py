"""Errors that carry a user-facing message (the CLI prints them without a traceback)."""

from __future__ import annotations


class BehaviorLMError(Exception):
    """Base class: the message names what is wrong and where."""


class InputError(BehaviorLMError):
    """Bad user input: a file, a column, a field value."""


class ManifestMismatch(BehaviorLMError):
    """An adapter's manifest does not match the base model, tokenizer or prompt version in use."""


class EngineError(BehaviorLMError):
    """A scoring engine could not be started or could not score."""


class TrainingError(BehaviorLMError):
    """Training cannot go on (e.g. the loss keeps turning non-finite)."""
