"""Plumbing: runtime (task setup, instantiation), errors, io (checkpoint readers), loggers, plots, pruning."""
