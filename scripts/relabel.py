"""Label a synthetic set with teacher runs: see fmnist/gan/relabel.py (also `fmnist-relabel`)."""

from fmnist.gan.relabel import main

if __name__ == "__main__":
    main()
