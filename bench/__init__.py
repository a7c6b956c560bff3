"""The request-path benchmark: ``bench/run`` (see bench/bench.py)."""
