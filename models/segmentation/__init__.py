"""U-Net cell segmentation: the segmenter and its training."""
