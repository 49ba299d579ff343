"""Plumbing every layer shares: errors (and how a command reports them), config_check (config values against their
targets), io (safe checkpoint reading, atomic writes), runtime (seed, threads, precision), containers, loggers, plots,
interrupt and resume (Ctrl-C and resuming in place), run_info (the leaderboard's rows).
The frame of every task is fmnist/task.py; the config resolvers are fmnist/resolvers.py."""
