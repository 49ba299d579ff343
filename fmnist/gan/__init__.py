"""The class-conditional GAN: train (the task), metrics (CAS, FD, agreement), source (what aug=gan draws)."""
