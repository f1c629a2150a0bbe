"""What differs per task: `classification` (its loss, validation metrics and fit over the shared loop).
A generation task plugs in beside it."""
