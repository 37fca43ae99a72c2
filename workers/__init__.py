"""Celery workers, replica backends and the autoscaler of the serverless model platform."""
