"""Train the class-conditional GAN: `python gan.py [key=value ...]`. See conf/gan.yaml and the README section
"GAN synthetic data"."""

from fmnist.gan.train import main

if __name__ == "__main__":
    main()
