"""Data the converter reads: calibration and evaluation sets, streamed in batches."""
