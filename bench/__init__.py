"""Benchmarks (not tests): reservation, store scaling, end-to-end throughput, memory.

Run `python -m bench NAME [--json] [--quick]`; see bench/__main__.py.
"""
