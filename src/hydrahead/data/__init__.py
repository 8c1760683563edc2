"""Datasets: readers, synthetic generators, tokenization/alignment and the LightningDataModule."""
