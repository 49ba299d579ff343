"""Plumbing every layer shares: errors (and how a command reports them), io (safe checkpoint reading, atomic
writes), runtime (seed, threads, precision), resolvers, task (the frame of every task), containers, loggers, plots,
pruning, run_info."""
