"""Mutation testing of the library's math (`python -m tests.mutations --help`; catalog.py)."""
