"""The stdio sidecar: JSON-RPC 2.0 over NDJSON on stdin/stdout, a door like HTTP over the same
runtime, for desktop and editor apps that start corral as a child process (no port to open)."""
