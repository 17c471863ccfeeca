"""The background trainer, its published model versions and the labelling simulation."""
