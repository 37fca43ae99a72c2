"""Loaded by a process started with this folder on PYTHONPATH: its wall clock runs ``CLOCK_SKEW`` seconds off,
as on a host whose clock is not in sync with the others."""

import os
import time

_skew = float(os.environ.get("CLOCK_SKEW", "0"))
_real = time.time
time.time = lambda: _real() + _skew
