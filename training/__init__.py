"""Datasets, simulated patients, training loop, evaluation and model export."""
