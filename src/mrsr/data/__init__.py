"""Data sources, the slice store, splits, bicubic degradation and patches."""
