"""timm backbones: the model configs train end to end, local weights files load (head replaced, stem adapted),
pretrained weights fail fast without a network, the frozen warm-up freezes what it should and then lets go."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import safetensors.torch
import timm
import torch
from hydra.utils import instantiate

from fmnist import PROJECT_ROOT
from fmnist.models.classifier import Classifier
from fmnist.models.components.timm_backbone import timm_backbone
from fmnist.train import train
from fmnist.utils.errors import UserError

from conftest import compose_cfg, run_cli, tiny_data_overrides, tiny_overrides

FMNIST_MEAN, IMAGENET_MEAN = [0.2860], [0.485, 0.456, 0.406]
OFFLINE_HINTS = ("model.pretrained=false", "model.weights=")


def timm_overrides(tiny_data, root: Path, model: str, *extra: str) -> list[str]:
    """Tiny data, random weights (no network here), 32 px, two short epochs so the warm-up switch happens."""
    return [
        *tiny_overrides(tiny_data, root), f"model={model}", "model.pretrained=false", "model.image_size=32",
        "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "small", "arch"), [("convnext", "convnext_atto", "ConvNeXt"), ("resnet50", "resnet18", "ResNet")]
)
def test_model_config_trains_end_to_end(model, small, arch, tiny_data, tmp_path):
    """The config's recipe end to end, on a small member of its family (the default ones build in test_configs)."""
    small_run = [f"model.backbone.name={small}", "+trainer.limit_test_batches=1"]
    overrides = timm_overrides(tiny_data, tmp_path, model, *small_run)
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["global_step"] == 6
    assert 0 <= metrics["test/acc"] <= 1 and metrics["test/nll"] > 0
    rebuilt = Classifier.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    assert type(rebuilt.backbone).__name__ == arch
    assert "pretrained" not in rebuilt.hparams and "weights" not in rebuilt.hparams, "a checkpoint never refetches"
    assert rebuilt.hparams.mean == FMNIST_MEAN, "random weights: Fashion-MNIST statistics"
    assert rebuilt.eval()(torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)).shape == (2, 10)


def head_and_stem(name: str) -> tuple[str, str]:
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.classifier, cfg.first_conv


@pytest.mark.parametrize(("name", "suffix", "in_chans"), [("convnext_atto", "safetensors", 1), ("resnet18", "pth", 3)])
def test_weights_file_loads_with_new_head_and_adapted_stem(name, suffix, in_chans, tiny_data, tmp_path):
    source = timm.create_model(name)  # an "ImageNet" model: 1000 classes, 3 channels, random weights
    file = tmp_path / f"weights.{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    safetensors.torch.save_file(state, file) if suffix == "safetensors" else torch.save(state, file)
    overrides = [*tiny_data_overrides(tiny_data, tmp_path), "model=timm", f"model.backbone.name={name}"]
    overrides += [f"model.weights={file}", f"model.in_chans={in_chans}", "model.image_size=32"]
    model = instantiate(compose_cfg("train", overrides, tmp_path / "run").model)

    head, stem = head_and_stem(name)
    loaded = model.backbone.state_dict()
    assert loaded[f"{head}.weight"].shape[0] == 10, "a new 10-class head"
    for key, expected in state.items():
        if key.startswith(f"{head}."):
            continue
        if key == f"{stem}.weight" and in_chans == 1:
            expected = expected.sum(dim=1, keepdim=True)  # timm's adaptation of an RGB stem to one channel
            torch.testing.assert_close(loaded[key], expected)
        else:
            assert torch.equal(loaded[key], expected), key
    assert model.hparams.mean == (IMAGENET_MEAN if in_chans == 3 else FMNIST_MEAN), "normalisation follows the weights"

    file.unlink()  # a checkpoint's model rebuilds without the file: the trained weights come from the checkpoint
    rebuilt = Classifier(**model.hparams)
    assert set(rebuilt.state_dict()) == set(model.state_dict())


def test_bad_weights_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        timm_backbone("convnext_atto", image_size=32, weights=str(tmp_path / "missing.safetensors"))
    other = tmp_path / "resnet18.safetensors"
    safetensors.torch.save_file(timm.create_model("resnet18").state_dict(), other)
    with pytest.raises(UserError, match=r"model\.weights=.*(does not hold|could not be loaded)"):
        timm_backbone("convnext_atto", image_size=32, weights=str(other))


def test_convnext_below_32_px_and_unknown_names_are_user_errors():
    with pytest.raises(UserError, match=r"at least 32 px.*model\.image_size=32"):
        timm_backbone("convnext_atto", image_size=28)
    with pytest.raises(UserError, match="not a timm model"):
        timm_backbone("convnext_nope", image_size=32)


def test_pretrained_with_hub_offline_fails_fast_with_both_fixes(tiny_data, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # the hub's own offline setting, empty cache
    start = time.monotonic()
    result = run_cli("train.py", *tiny_overrides(tiny_data, tmp_path), "model=convnext", env=env, timeout=120)
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert all(hint in output for hint in OFFLINE_HINTS), output[-3000:]
    assert "Traceback" not in output
    assert elapsed < 60, f"{elapsed:.0f} s: should fail right after start-up"
    assert not list(tmp_path.rglob("*.ckpt"))


def test_pretrained_with_network_unreachable_fails_within_seconds(tmp_path):
    """The real network path: nothing listens on the endpoint (huggingface_hub alone retries for ~50 s)."""
    code = textwrap.dedent("""
        import time
        from fmnist.utils.errors import UserError
        from fmnist.models.components.timm_backbone import timm_backbone
        start = time.monotonic()
        try:
            timm_backbone("convnext_atto", image_size=32, pretrained=True)
        except UserError as e:
            print(f"{time.monotonic() - start:.2f}", e)
    """)
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stdout, result.stderr[-3000:]
    seconds, message = result.stdout.split(" ", 1)
    assert float(seconds) < 10 and "unreachable" in message
    assert all(hint in message for hint in OFFLINE_HINTS)


class Snapshots(pl.Callback):
    """The backbone's state (parameters and buffers) at the end of every training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.backbone.state_dict().items()})


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_frozen_warmup_then_whole_network_at_lower_lr(name, tiny_data, tmp_path):
    overrides = timm_overrides(tiny_data, tmp_path, "timm", f"model.backbone.name={name}", "model.layer_decay=0.8")
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    datamodule, model = instantiate(cfg.data), instantiate(cfg.model)
    initial = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    snapshots = Snapshots()
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[snapshots], accelerator="cpu",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)

    head, _ = head_and_stem(name)
    is_head = lambda key: key.startswith(f"{head}.")  # noqa: E731
    warmup, after = snapshots.states
    assert all(torch.equal(warmup[k], v) for k, v in initial.items() if not is_head(k)), "backbone frozen (BN too)"
    assert all(not torch.equal(warmup[k], v) for k, v in initial.items() if is_head(k)), "the head trains"
    params = dict(model.backbone.named_parameters())
    changed = [not torch.equal(after[k], warmup[k]) for k in params if not is_head(k)]
    assert all(changed), f"after the switch every backbone parameter trains ({sum(changed)}/{len(changed)})"

    lr, scale = cfg.model.optimizer.lr, cfg.model.backbone_lr_scale
    groups = trainer.optimizers[0].param_groups
    for group in groups:  # one-cycle peaks per group: the head at lr, the backbone lower, earlier layers lower still
        assert group["max_lr"] == pytest.approx(lr * group["lr_scale"])
    head_ids = {id(p) for p in model.backbone.get_classifier().parameters()}
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert {scale_of[i] for i in head_ids} == {1.0}
    stem = next(iter(params.values()))
    assert scale_of[id(stem)] == pytest.approx(min(scale_of.values())) and scale_of[id(stem)] < scale * 0.8**3
    assert max(s for i, s in scale_of.items() if i not in head_ids) <= scale
