"""Behavior data pipeline: event logs in, prepared datasets (samples per split) out.

- :mod:`behaviorlm.training.data.readers`: generic CSV/JSONL/Parquet logs, Context Trails,
  SmartThings.
- :mod:`behaviorlm.training.data.pipeline`: :func:`.pipeline.prepare_log` (one call
  from a DataFrame) and :func:`.pipeline.prepare_events`.
- :mod:`behaviorlm.training.data.dataset`: :class:`.dataset.PreparedDataset`, the
  reader training and evaluation use.
- :mod:`behaviorlm.training.data.synthetic`: :func:`.synthetic.make_synthetic_log`.
"""
