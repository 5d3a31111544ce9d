"""Persistence and the outside world: config, Postgres, Redis, embedded services."""
