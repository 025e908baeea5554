"""Datasets, image reading and augmentation (method-agnostic)."""
