"""Compression: building variants and the compress table (variants.py)."""
