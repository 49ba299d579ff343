from fmnist.data.datamodule import FashionMNISTDataModule, stratified_split

__all__ = ["FashionMNISTDataModule", "stratified_split"]
