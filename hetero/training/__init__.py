"""Training into the cloud's space: the loop, loss terms, the frozen teacher and its cached targets, importing a
user's cloud, quantisation-aware fine-tuning, DDP, and the architecture search."""
