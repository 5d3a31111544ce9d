"""The gateway: HTTP and WebSocket transport, auth, limits, CLI. No game rules here."""
