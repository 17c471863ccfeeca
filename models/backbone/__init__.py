"""The U-Net, its pretraining and fine-tuning, cell embedding, the LR schedule and checkpoints."""
