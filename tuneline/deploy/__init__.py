"""Deployment pieces the server imports: model loading, production loader, feedback anonymizer."""
