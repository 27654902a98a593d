"""Small command-line tools: the demo, the model-tune.yaml printer, the model listing."""
