"""Kept for users who expect `python setup.py develop`; all metadata lives in pyproject.toml."""
from setuptools import setup

if __name__ == "__main__":
    setup()
