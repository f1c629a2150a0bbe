"""Evaluation: scoring a model on a split (scoring.py)."""
