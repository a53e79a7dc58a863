"""The training engine: one loop (on Accelerate) for every objective; see `loop.py`."""
