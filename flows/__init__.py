"""Prefect flows: when the pipeline runs, retries and gates. No ML logic here."""
