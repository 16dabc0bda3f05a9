"""Models: plain classes, no I/O (churn and value, BG/NBD, recommenders, offers, triggers, segments).

LightGBM's OpenMP threads wait for each other at every barrier; by default they spin there, which on a
machine shared with other jobs (or with fewer free cores than threads) makes a fit many times slower: a
churn and value fit (80 trees, 12,600 rows, 2 threads) took 36.8 s wall at load average 20, 1.6 s with
``OMP_WAIT_POLICY=PASSIVE`` (3.0 s on one thread). The models are the same either way (LightGBM runs
``deterministic``); the environment's own setting wins, and it must be set before LightGBM (or implicit)
is first imported, which any ``models`` import is preceded by.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
