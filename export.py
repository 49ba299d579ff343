"""Export a trained model: `python export.py ckpt_path=<ckpt> format=onnx|torchscript|safetensors`."""

from fmnist.predict.export import main

if __name__ == "__main__":
    main()
