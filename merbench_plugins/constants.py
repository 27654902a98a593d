"""Constants shared by data, blocks and training code (imported downward by all of them)."""

MISSING_VALENCE = -10.0  # MERBench's marker for "no valence label" (MER2023 test3)
