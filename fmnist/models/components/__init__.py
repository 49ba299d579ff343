"""Plain nn.Modules (backbones and GAN nets). The LightningModules that train them live one level up."""
