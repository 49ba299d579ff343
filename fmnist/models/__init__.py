"""Plain nn.Modules (backbones). The LightningModules that train them live in fmnist.modules."""
