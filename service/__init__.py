"""The prediction service: FastAPI app (``service.app.create_app``), settings, engine runtime,
micro-batcher, metrics and routes. ``behaviorlm serve`` runs it (``service.cli``)."""
