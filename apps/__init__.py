"""Runnable applications outside the library (run as `python -m apps.<name>`)."""
