"""The LightningModules (classifier, distill, gan), what trains them beside the data (ema, finetuning, schedules,
schedule_estimate, rng_state callbacks), how they score (calibration, tta) and load (files: classifiers and GAN
checkpoints; generator_file: a generator alone as a pickle-free .safetensors file, e.g. the shipped one); their plain
nets are in `components/`."""
