"""greenctl's common code: configuration, schema, database session, Celery app."""
