"""The MongoDB fixtures live in tests/conftest.py (shared with store-parametrized tests)."""
