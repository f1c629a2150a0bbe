"""Training: the one training loop (loop.py) and the layer-wise controls it applies (freezing.py)."""
