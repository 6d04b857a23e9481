"""Tooling around the converter: datasets, the model zoo, training (clip-floor included)."""
