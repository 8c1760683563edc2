"""Datasets: readers, synthetic generators, tokenization/alignment, caches and the LightningDataModule."""

SPLITS = ("train", "validation", "test")
"""The split names, in order; every reader, cache and corpus uses these."""
