"""pytest fixtures: catalogue (owned by one area; loaded from conftest.py)."""
