"""Execution: the Celery app, its thread pool, and the runner that takes a job from its queue to a replica."""
