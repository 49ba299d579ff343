"""Combine finished runs: `python scripts/ensemble.py runs='[outputs/train/runs/A,outputs/train/runs/B]'`
or `python scripts/ensemble.py 'runs=outputs/train/multiruns/<ts>/*'`. Settings: conf/ensemble.yaml."""

from fmnist.ensemble.run import main

if __name__ == "__main__":
    main()
