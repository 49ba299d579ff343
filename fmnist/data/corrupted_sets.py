"""Corrupted copies of a split, generated once (fmnist.data.corruptions) and cached on disk.

One file per split and corruption, `<cache_dir>/<split>/<name>.safetensors` (uint8 images, like the originals; no
pickle), with a manifest beside it, `<name>.json`: suite version, corruption, severity, seed, split, the number of
images, a SHA-256 of the source images, the torch and kornia versions that generated it and a SHA-256 of the file. A
set is reused only when its manifest matches what would be generated now and the file still has that checksum; a
truncated, edited or stale one (another seed, severity, suite version, source split or library version, whose
kernels may differ) is generated again, with a log line saying why.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fmnist.data.corruptions import CORRUPTIONS, SUITE_VERSION, corrupt
from fmnist.utils.io import atomic_path

log = logging.getLogger("fmnist")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def expected_manifest(source: torch.Tensor, split: str, name: str, seed: int) -> dict:
    """What a cached set must record to be reused for these source images (uint8, (N, H, W) or (N, 1, H, W))."""
    return {
        "suite_version": SUITE_VERSION,
        "corruption": name,
        "severity": CORRUPTIONS[name].severity,
        "seed": seed,
        "split": split,
        "images": len(source),
        "source_sha256": sha256(source.contiguous().numpy().tobytes()),
        # the kernels that generated it (on the CPU: a CUDA or CPU build of one torch release generate the same)
        "libraries": f"torch {torch.__version__.split('+')[0]}, kornia {version('kornia')}",
    }


def why_stale(path: Path, manifest_path: Path, expected: dict) -> str | None:
    """None if the cached set at `path` can be reused, else the reason it cannot."""
    if not path.is_file() or not manifest_path.is_file():
        return "not cached yet"
    try:
        recorded = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return "unreadable manifest"
    changed = [k for k, v in expected.items() if recorded.get(k) != v]
    if changed:
        return "stale: " + ", ".join(f"{k} {recorded.get(k)!r} -> {expected[k]!r}" for k in changed)
    if recorded.get("file_sha256") != sha256(path.read_bytes()):
        return "checksum mismatch (truncated or modified file)"
    return None


def corrupted_set(source: torch.Tensor, split: str, name: str, seed: int, cache_dir: str | Path) -> torch.Tensor:
    """The corrupted copy of `source` (uint8 images of one split) under corruption `name`, (N, 1, H, W) uint8: from
    the cache when its manifest and checksum match, else generated (deterministically from `seed`) and cached."""
    source = source.reshape(len(source), 1, *source.shape[-2:])
    directory = Path(cache_dir) / split
    path, manifest_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    expected = expected_manifest(source, split, name, seed)
    reason = why_stale(path, manifest_path, expected)
    if reason is None:
        return load_file(str(path))["images"]
    log.info(f"Generating the {split} set '{name}' ({reason}) in {directory}")
    images = (corrupt(source.float() / 255, name, seed) * 255).round().to(torch.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"images": images.contiguous()}, str(tmp))
    manifest = {**expected, "file_sha256": sha256(path.read_bytes())}
    with atomic_path(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return images
