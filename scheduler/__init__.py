"""The scheduler: validates an experiment, expands it into tasks, records and enqueues them."""
