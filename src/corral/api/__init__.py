"""The HTTP server: OpenAI-compatible routes, admin routes, health and metrics."""
