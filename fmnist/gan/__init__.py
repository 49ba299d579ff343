"""The class-conditional GAN's tasks: train (the task), metrics (CAS, FD, agreement), source (what aug=gan draws),
generate (a synthetic set from a generator), relabel (soft labels for synthetic images from trained classifiers). The
GAN and its files are in fmnist.models (gan, files, generator_file)."""
