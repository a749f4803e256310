"""Shapes-world generator for the 'mcq' task (being written)."""
