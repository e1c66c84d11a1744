"""
Benchmarks for imageproto.  Run them from the checkout's root, for example
C{python -m bench.throughput}; see C{bench/README.md}.
"""
