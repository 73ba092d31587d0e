"""Models: the family registry (cloud and edge members with aligned structure), shared layers, and checkpoints."""
