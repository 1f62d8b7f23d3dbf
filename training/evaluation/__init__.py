"""Evaluation: metrics (overall / anchor / tail), classical and LLM systems, calibration, reports.

``behaviorlm eval`` (``training.evaluation.cli``) runs systems on the same test samples of a
prepared dataset and writes ``report.json``, ``report.md`` and PNG plots.
"""
