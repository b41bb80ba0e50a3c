"""Multi-task sentence transformer."""
