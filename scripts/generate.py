"""Write a labelled synthetic set from a GAN checkpoint: see fmnist/gan/generate.py (also `fmnist-generate`)."""

from fmnist.gan.generate import main

if __name__ == "__main__":
    main()
