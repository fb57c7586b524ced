"""Application layer: commands, their handlers, and the one write path."""
