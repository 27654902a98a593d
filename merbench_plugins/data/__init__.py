"""Data: the MERBench on-disk layout reader, synthetic data and benchmark presets, RAVDESS."""
