"""Interfaces: the HTTP API (Falcon), the CLI, and the composition root."""
