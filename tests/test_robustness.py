"""The corruption suite: deterministic, in range, cached safely; eval.py corruptions=...; aug=robust."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fmnist.data.corrupted_sets import corrupted_set
from fmnist.data.corruptions import CORRUPTIONS, corrupt, random_corruptions
from fmnist.evaluate import evaluate
from fmnist.train import train

from conftest import compose_cfg, run_cli, tiny_data_overrides, tiny_overrides

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "glass_blur", "rotate", "shear"}
RANDOM |= {"translate", "rot90"}  # the others are the same for every seed


def garments(n: int = 24, seed: int = 0) -> torch.Tensor:
    """Bright blobs on a black background, like Fashion-MNIST, as uint8 (N, 28, 28)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 28, 28)
    images[:, 6:22, 8:20] = torch.rand(n, 16, 12, generator=generator) * 0.6 + 0.4
    return (images * 255).round().to(torch.uint8)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_is_seeded_in_range_and_changes_the_images(name):
    images = garments().unsqueeze(1).float() / 255
    first, again, other = corrupt(images, name, seed=0), corrupt(images, name, seed=0), corrupt(images, name, seed=1)
    assert first.shape == images.shape and first.dtype == torch.float32
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again), "the same seed gives the same images"
    assert (first - images).abs().mean() > 0.01, "the corruption is visible"
    assert torch.equal(first, other) != (name in RANDOM), "only the random corruptions depend on the seed"


def test_cached_sets_are_reused_only_while_manifest_and_checksum_match(tmp_path, caplog):
    source = garments(30)
    caplog.set_level(logging.INFO, logger="fmnist")
    made = corrupted_set(source, "test", "rotate", 0, tmp_path)
    path, manifest_path = tmp_path / "test" / "rotate.safetensors", tmp_path / "test" / "rotate.json"
    manifest = json.loads(manifest_path.read_text())
    assert made.shape == (30, 1, 28, 28) and made.dtype == torch.uint8
    assert manifest["seed"] == 0 and manifest["severity"] == CORRUPTIONS["rotate"].severity and manifest["images"] == 30

    def regenerated(seed: int = 0, src: torch.Tensor = source) -> bool:
        caplog.clear()
        again = corrupted_set(src, "test", "rotate", seed, tmp_path)
        assert torch.equal(load_file(str(path))["images"], again)
        return "Generating" in caplog.text

    assert not regenerated(), "an intact cache is reused"
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    assert regenerated() and "checksum" in caplog.text
    assert torch.equal(corrupted_set(source, "test", "rotate", 0, tmp_path), made), "regenerated identically"
    assert regenerated(seed=1) and "seed 0 -> 1" in caplog.text, "another seed is stale"
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "severity": 45.0}))
    assert regenerated(seed=1) and "severity" in caplog.text, "another severity is stale"
    assert regenerated(seed=1, src=garments(30, seed=5)) and "source_sha256" in caplog.text, "other source images"
    old_kernels = {**json.loads(manifest_path.read_text()), "libraries": "torch 2.0, kornia 0.6"}
    manifest_path.write_text(json.dumps(old_kernels))
    assert regenerated(seed=1, src=garments(30, seed=5)) and "libraries" in caplog.text, "other kernels"


def test_random_corruptions_keep_shape_and_range_and_follow_the_seed():
    images = garments(64).unsqueeze(1).float() / 255
    torch.manual_seed(0)
    out = random_corruptions(images, p=0.5, groups=4)
    torch.manual_seed(0)
    assert torch.equal(random_corruptions(images, p=0.5, groups=4), out)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    changed = (out - images).flatten(1).abs().amax(1) > 0
    assert 10 < changed.sum() < 54, "about half the images are corrupted"
    assert torch.equal(random_corruptions(images, p=0.0), images)


def test_a_bad_corruption_name_exits_2_listing_the_choices(tmp_path):
    result = run_cli("eval.py", "ckpt_path=missing.ckpt", "corruptions=[rotate,fog]", f"paths.log_dir={tmp_path}")
    assert result.returncode == 2, result.stderr
    message = result.stdout + result.stderr
    assert "fog" in message and all(name in message for name in CORRUPTIONS)
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("robustness.examples=-1", "robustness.examples=-1 must be at least 1"),
        ("robustness.examples=abc", "robustness.examples=abc: expected a whole number"),
        ("robustness.cache_dir=/proc/no_such_place", "robustness.cache_dir=/proc/no_such_place: cannot create it"),
    ],
)
def test_robustness_settings_are_checked_before_any_scoring(tmp_path, override, message):
    from fmnist.robustness import check_settings
    from fmnist.utils.errors import UserError

    with pytest.raises(UserError, match=message):
        check_settings(compose_cfg("eval", ["ckpt_path=x.ckpt", "corruptions=all", override], tmp_path).robustness)


def test_eval_scores_a_trained_run_on_the_corrupted_sets(tiny_data, tmp_path):
    """aug=robust trains (one epoch of the tiny data); eval.py corruptions=... writes the figures and metrics."""
    train(compose_cfg("train", [*tiny_overrides(tiny_data, tmp_path), "aug=robust", "trainer.max_epochs=1"],
                      tmp_path / "run"))  # fmt: skip
    names = ["contrast", "rot90"]
    overrides = [*tiny_data_overrides(tiny_data, tmp_path), f"ckpt_path={tmp_path / 'run/checkpoints/best.ckpt'}",
                 f"corruptions=[{','.join(names)}]", f"robustness.cache_dir={tmp_path / 'cache'}",
                 "splits=[val,test]"]  # fmt: skip
    metrics = evaluate(compose_cfg("eval", overrides, tmp_path / "eval"))
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for split in ("val", "test"):
        accs = [saved[f"{split}/corrupted/{n}/acc"] for n in names]
        assert all(0 <= a <= 1 for a in accs)
        assert saved[f"{split}/corrupted/mean_acc"] == pytest.approx(sum(accs) / 2)
        drop = 1 - saved[f"{split}/corrupted/mean_acc"] / saved[f"{split}/acc"]
        assert saved[f"{split}/corrupted/relative_drop"] == pytest.approx(drop)
    assert metrics["test/acc"] == saved["test/acc"]
    for png in ("corruptions.png", "corruptions_val.png", "corruption_examples.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 1000
    assert sorted(p.name for p in Path(tmp_path / "cache" / "test").iterdir()) == [
        "contrast.json", "contrast.safetensors", "rot90.json", "rot90.safetensors"]  # fmt: skip


def test_per_image_normalisation_ignores_brightness_and_contrast_and_exports_the_same(random_ckpt):
    from fmnist.models.classifier import Classifier
    from fmnist.models.files import load_classifier
    from fmnist.predict.export import Logits

    hparams = {**dict(load_classifier(random_ckpt).hparams), "input_norm": "per_image"}
    model = Classifier(**hparams).eval()
    images = garments(8).unsqueeze(1).float() / 255 * 0.5 + 0.1  # room for brighter and flatter copies
    with torch.no_grad():
        logits = model(images)
        assert torch.allclose(model(images + 0.3), logits, atol=1e-4), "a uniformly lighter image looks the same"
        assert torch.allclose(model(images * 0.5), logits, atol=0.05), "so does a flatter one (up to the epsilon)"
        assert torch.allclose(Logits(model)(images), logits, atol=1e-5), "the exported forward normalises alike"
        default = Classifier(**{**hparams, "input_norm": "dataset"}).eval()
        default.load_state_dict(model.state_dict())
        assert not torch.allclose(default(images + 0.3), default(images), atol=1e-2)
    with pytest.raises(ValueError, match="per_image"):
        Classifier(**{**hparams, "input_norm": "whatever"})
