"""pytest fixtures: proxy (owned by one area; loaded from conftest.py)."""
