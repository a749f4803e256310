"""Shapes-world generator for the 'dialog' task (being written)."""
