"""Pure game rules: frozen states and reducers, no I/O, no clock, no global randomness.

Every game here is `apply(state, command, now, rng) -> (state, events)`: time (epoch
milliseconds) and randomness (`random.Random`) come in as arguments so the rules can be
tested with tables and properties.
"""
