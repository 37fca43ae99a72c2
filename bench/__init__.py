"""The benchmark: the platform beside its references (a direct model call, bare Celery), in one run.

Run it with ``python -m bench`` (``scripts/bench.sh`` installs what it needs first).
"""
