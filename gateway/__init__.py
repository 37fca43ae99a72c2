"""The REST gateway: validates requests, records jobs in Redis and hands them to Celery."""
