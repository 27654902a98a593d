"""Training: the per-fold loop (engine), the fold-parallel engine, run options, and the runners."""
