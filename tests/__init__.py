"""The test suite as a package: test modules import shared helpers as ``tests.support`` (see tests/support.py)."""
