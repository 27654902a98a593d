"""Building blocks of the models: encoders, fusion, losses, masking, attention, ResNet, audio."""
