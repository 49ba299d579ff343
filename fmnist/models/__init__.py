"""LightningModules (classifier, fine-tuning, GAN); their plain nets are in `components/`."""
