"""Evaluation: metrics (overall / anchor / tail), classical and LLM systems, calibration, reports.

``behaviorlm eval`` (``behaviorlm.training.evaluation.cli``) runs systems on the same test samples
of a prepared dataset and writes ``report.json``, ``report.md`` and PNG plots.
"""

# System names of ``behaviorlm eval --systems`` (here so the CLI parser imports nothing heavy).
CLASSICAL: tuple[str, ...] = (
    "most-popular",
    "user-frequency-all",
    "user-frequency-lastk",
    "markov-global",
    "markov-user",
)
GROUPS: dict[str, tuple[str, ...]] = {"classical": CLASSICAL}
# hybrid-sasrec: every LLM system fused with SASRec (fusion.py), reported as kind "hybrid"
KNOWN: tuple[str, ...] = (*CLASSICAL, "sasrec", "zero-shot", "adapters", "hybrid-sasrec")
