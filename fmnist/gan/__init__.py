"""The class-conditional GAN: train (the task), metrics (CAS, FD, agreement), source (what aug=gan draws),
generator_file (a generator as a pickle-free .safetensors file, e.g. the shipped one), generate (a synthetic set from
a generator), relabel (soft labels for synthetic images from trained classifiers)."""
