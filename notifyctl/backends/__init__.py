"""Implementations of the pipeline's backend interfaces (pipeline/backend.py)."""
