"""pytest fixtures: store (owned by one area; loaded from conftest.py)."""
