"""Writes for data management (see each module)."""
