"""The leaderboard of the runs under outputs/:
`python scripts/runs.py [--all] [--wide] [--csv PATH] [--sort val|test|time] [--task NAME]`.
See fmnist/runs.py (also installed as `fmnist-runs`)."""

from fmnist.runs import main

if __name__ == "__main__":
    main()
