"""Runtime: devices, loading handlers, and (for the server) registry and scheduling."""
