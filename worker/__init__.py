"""The inference worker: Celery tasks that run one classification each and record its cost."""
