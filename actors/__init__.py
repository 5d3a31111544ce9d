"""Ray actors: one writer per game instance, durable before it answers."""
