"""hetero: edge models that share one embedding space with a cloud model, proven on real runtimes."""

__version__ = "0.1.0"
