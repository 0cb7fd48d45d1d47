"""Benchmarks: each module prints a table; none of them is a test."""
