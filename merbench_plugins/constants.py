"""Constants shared by data, blocks and training code (imported downward by all of them)."""

MISSING_VALENCE = -10.0  # MERBench's marker for "no valence label" (MER2023 test3)
# the MER challenges' six discrete emotions (MER2023 ... MER2026 Track 1), in MERBench's class order
MER2023_EMOTIONS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
