"""Using a trained model: `python predict.py images=...` (task.py) and `python export.py` (export.py).

preprocess.py turns any image into a Fashion-MNIST-style 28x28 uint8 array, images.py reads files safely; the
classifier comes from a .ckpt or a pickle-free .safetensors file through fmnist.models.files."""
