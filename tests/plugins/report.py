"""pytest fixtures: report (owned by one area; loaded from conftest.py)."""
