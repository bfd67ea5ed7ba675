"""Text segmentation from late-layer head similarities, and its evaluation."""
