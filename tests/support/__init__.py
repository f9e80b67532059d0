"""Helpers shared by the test suite (fixtures live in tests/conftest.py)."""
