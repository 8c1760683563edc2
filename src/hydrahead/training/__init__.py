"""Training: the LightningModule, its metrics and optimizer groups."""
