"""Classify images with a trained model: `python predict.py images=<file, folder or glob> [ckpt_path=...]`."""

from fmnist.predict.task import main

if __name__ == "__main__":
    main()
