"""pytest fixtures: postgres (owned by one area; loaded from conftest.py)."""
