"""Data shipped with vlmtune: tiny-base/ is the built-in tiny base VLM (scripts/build_tiny_base.py)."""
