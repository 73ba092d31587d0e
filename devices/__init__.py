"""Runtimes (one module each) and the harness that measures compatibility on them."""
