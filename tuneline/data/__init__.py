"""Data: sources and their pinned fetching (`assets`), the record schema and atomic IO (`records`),
text rules (`text`), great-expectations validation (`validation`), personal data (`pii/`) and the leak audit."""
