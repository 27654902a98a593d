"""Command-line tools around the runs: the demo, predict / ensemble / submit, the model-tune.yaml printer, the model listing."""
