"""pytest fixtures: prometheus (owned by one area; loaded from conftest.py)."""
