from fmnist.data.datamodule import CLASSES, FashionMNISTDataModule, stratified_split, to_unit_float

__all__ = ["CLASSES", "FashionMNISTDataModule", "stratified_split", "to_unit_float"]
