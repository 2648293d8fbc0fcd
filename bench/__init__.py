"""`make bench`: the performance figures of issue 6, each against its baseline (see run.py)."""
