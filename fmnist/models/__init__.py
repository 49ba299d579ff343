"""The LightningModules (classifier, distill, gan), what trains them beside the data (ema, finetuning, schedules,
schedule_estimate callbacks), how they score (calibration, tta) and load (files); their plain nets are in
`components/`."""
