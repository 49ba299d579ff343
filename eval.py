"""Re-evaluate a run or a checkpoint: `python eval.py ckpt_path=<run>[/checkpoints/best.ckpt] [splits=[val,test]]`."""

from fmnist.evaluate import main

if __name__ == "__main__":
    main()
