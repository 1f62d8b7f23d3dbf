"""BehaviorLM: next-behavior prediction with a two-stage LoRA-tuned small LLM.

This package is the contract shared by ``training`` and ``service``: events and samples, the
behavior vocabulary, the versioned prompt renderer, the label-word head, adapter manifests and
the scoring engines. It imports without torch or vLLM; engines import them lazily.
"""

__version__ = "0.1.0"
