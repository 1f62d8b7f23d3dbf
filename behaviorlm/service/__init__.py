"""The prediction service: FastAPI app (``behaviorlm.service.app.create_app``), settings, engine
runtime,
micro-batcher, metrics and routes. ``behaviorlm serve`` runs it (``behaviorlm.service.cli``)."""
