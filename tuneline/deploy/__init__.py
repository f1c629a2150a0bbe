"""Deployment: the model registry and production pointer (`registry`), the promotion gate (`gate`),
a model folder ready to answer (`predictor`), the feedback store (`feedback`) and what a server
calls to load models and anonymize feedback (`serving`)."""
