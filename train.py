"""Train a model: `python train.py [group=option ...] [key=value ...]`. See conf/train.yaml and the README."""

from fmnist.train import main

if __name__ == "__main__":
    main()
