"""Exporters: one module per format, plus shared validation. Depends on `hetero` core only."""
