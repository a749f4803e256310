"""Tasks defined outside vlmtune, as a user's plugin package would define them (see tests/test_plugin_task.py)."""
