"""Deployment: the model registry and production pointer (`registry`), the promotion gate (`gate`),
a model folder ready to answer (`predictor`) and the feedback store (`feedback`)."""
