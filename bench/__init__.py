"""Benchmarks: Fission against the mall way (one locked transaction per join) and against
the machine's raw limits (an echo/broadcast-only socket server, batched inserts).

Run `python -m bench [--smoke] [--out DIR]` from the repository root; see
`docs/performance.md`. Nothing here is part of the server.
"""
