"""Any timm model as a Classifier backbone: a new 10-class head, 1 or 3 input channels, initial weights from the
Hugging Face hub (`pretrained`) or a local file (`weights`), and the parameter groups of a fine-tuning schedule.

Pretrained weights never silently fall back to random ones: when the hub cannot be reached (and the weights are not
in its local cache) the build fails within seconds with a message naming both fixes. huggingface_hub itself would
retry a failing download with backoff for about a minute per file (longer on a network that drops packets), so the
hub is probed first with a short timeout and, if unreachable, asked in its offline mode (cache only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import timm
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import get_session
from timm.models import get_pretrained_cfg, group_parameters, is_model_in_modules, load_state_dict
from torch import nn

from fmnist.dataset import FMNIST_STATS
from fmnist.models.components.weight_decay import takes_weight_decay
from fmnist.utils.errors import UserError

log = logging.getLogger(__name__)

# ConvNeXt downsamples by 4 (stem) then 3 x 2 with unpadded 2x2 convolutions: below 32 px a map shrinks to nothing
MIN_IMAGE_SIZE = {"convnext": 32}


def input_stats(which: str, name: str, in_chans: int, pretrained: bool, weights: str | None) -> list[float]:
    """The normalisation that follows the weights (the `fmnist_input_stats` config resolver): the weights' own
    statistics (ImageNet's for timm's usual weights) when pretrained weights meet 3 channels, else Fashion-MNIST's."""
    if (pretrained or weights) and int(in_chans) == 3:
        cfg = get_pretrained_cfg(name) if timm.is_model(name) else None
        imagenet = {"mean": timm.data.IMAGENET_DEFAULT_MEAN, "std": timm.data.IMAGENET_DEFAULT_STD}
        return list(getattr(cfg, which, None) or imagenet[which])
    return list(FMNIST_STATS[which])


def timm_backbone(
    name: str,
    num_classes: int = 10,
    in_chans: int = 1,
    image_size: int = 224,
    pretrained: bool = False,
    weights: str | None = None,
    drop_path_rate: float = 0.0,
    **kwargs,
) -> nn.Module:
    """`timm.create_model(name)` with a new `num_classes` head. Initial weights: a local file when `weights` is set,
    else the hub's when `pretrained`, else random. With `in_chans=1` timm sums the stem's RGB filters."""
    if not timm.is_model(name):
        family = name.split("_")[0].split(".")[0]
        similar = timm.list_models(f"{family}*")[:12] or timm.list_models("convnext*")[:12]
        raise UserError(f"model.backbone.name={name} is not a timm model. Some that are: {', '.join(similar)}.")
    for family, minimum in MIN_IMAGE_SIZE.items():
        if image_size < minimum and is_model_in_modules(name, [family]):
            raise UserError(
                f"{name} needs images of at least {minimum} px, but model.image_size={image_size}. "
                f"Set model.image_size={minimum} (or larger: 64, 224)."
            )
    kwargs = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if drop_path_rate:  # only when asked: not every timm model takes it
        kwargs["drop_path_rate"] = drop_path_rate
    if weights:
        return from_file(name, Path(weights).expanduser(), kwargs)
    if pretrained:
        return from_hub(name, kwargs)
    return timm.create_model(name, pretrained=False, **kwargs)


def from_file(name: str, path: Path, kwargs: dict) -> nn.Module:
    """timm's own loader (stem adaptation, head replacement, key remapping) on a local file; then a check that the
    file covered the whole backbone, because timm loads non-strictly once the head is replaced."""
    if not path.is_file():
        raise UserError(f"model.weights={path}: no such file. Give a .safetensors or .pth state dict of {name}.")
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
        file_keys = set(_remapped_state_dict(model, path))
    except Exception as e:  # unreadable file, wrong tensor shapes: the message names the file, the cause follows
        raise UserError(f"model.weights={path} could not be loaded into {name}: {type(e).__name__}: {e}") from e
    head = tuple(f"{prefix}." for prefix in _classifier_names(model))
    missing = [k for k in model.state_dict() if k not in file_keys and not k.startswith(head)]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(
            f"model.weights={path} does not hold {name}'s weights: {len(missing)} tensors are missing "
            f"(e.g. {', '.join(missing[:3])}). Is model.backbone.name the architecture the file was saved from?"
        )
    log.info(f"{name}: weights loaded from {path}")
    return model


def _remapped_state_dict(model: nn.Module, path: Path) -> dict:
    """The file's state dict after the model's own key remapping (timm's `checkpoint_filter_fn`), as timm loaded it."""
    state = load_state_dict(str(path))
    remap = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    return remap(state, model) if remap else state


def _classifier_names(model: nn.Module) -> list[str]:
    names = model.pretrained_cfg.get("classifier") or []
    return [names] if isinstance(names, str) else list(names)


def hub_probe_timeout() -> float:
    """Seconds the reachability check waits: HF_HUB_ETAG_TIMEOUT (the hub's own metadata timeout) when set, else 5."""
    return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 5)


def hub_reachable(timeout: float) -> bool:
    """One HEAD request to the hub's endpoint (HF_ENDPOINT; proxies as configured for huggingface_hub), no retries."""
    if hub_constants.is_offline_mode():
        return False
    try:
        response = get_session().head(hub_constants.ENDPOINT, timeout=timeout)
    except Exception:  # any transport failure (DNS, refused, timeout, TLS) means: not reachable now
        return False
    return response.status_code < 500


@contextlib.contextmanager
def hub_offline(enabled: bool) -> Iterator[None]:
    """huggingface_hub's offline mode (HF_HUB_OFFLINE=1, read at import) for the duration: cache only, no retries."""
    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = previous or enabled
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def from_hub(name: str, kwargs: dict) -> nn.Module:
    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"timm has no pretrained weights for {name}: use model.pretrained=false or model.weights=...")
    offline = hub_constants.is_offline_mode()
    if not offline and not hub_reachable(hub_probe_timeout()):
        offline = True
        log.warning(f"The Hugging Face hub ({hub_constants.ENDPOINT}) is unreachable: looking in its local cache only.")
    try:
        with hub_offline(offline):
            return timm.create_model(name, pretrained=True, **kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        why = "offline mode is set (HF_HUB_OFFLINE)" if hub_constants.is_offline_mode() else "the hub is unreachable"
        repo = cfg.hf_hub_id or cfg.url
        raise UserError(
            f"Pretrained weights for {name} ({repo}) are not available: {why} and they are not in the local cache "
            f"({hub_constants.HF_HUB_CACHE}). Either train from random weights with model.pretrained=false, or fetch "
            f"the file on a machine with network (hf download {repo} model.safetensors --local-dir weights) and "
            f"pass it with model.weights=weights/model.safetensors."
        ) from e


def scaled_parameter_groups(model: nn.Module, backbone_lr_scale: float, layer_decay: float | None) -> list[dict]:
    """Parameter groups with an `lr_scale` each: 1 for the head (timm's `get_classifier()`), `backbone_lr_scale` for
    the rest, times `layer_decay ** depth` (depth counted from the top in timm's layer grouping of the model) when
    layer_decay is set. As in the Classifier's default, weight decay only on tensors with more than one dimension.
    Frozen parameters are included: a warm-up (fmnist.models.finetuning) unfreezes them without changing groups."""
    if not hasattr(model, "get_classifier"):
        raise UserError(
            "model.backbone_lr_scale / model.layer_decay need a backbone whose head is known (timm's get_classifier())"
        )
    head = {id(p) for p in model.get_classifier().parameters()}
    if layer_decay:
        matcher = model.group_matcher(coarse=False) if hasattr(model, "group_matcher") else None
        layer_of = group_parameters(model, matcher, reverse=True) if matcher else timm.optim.auto_group_layers(model)
        top = max(layer_of.values())
    groups: dict[tuple[float, bool], dict] = {}
    for name, p in model.named_parameters():
        scale = 1.0
        if id(p) not in head:
            scale = backbone_lr_scale * (layer_decay ** (top - layer_of.get(name, top)) if layer_decay else 1.0)
        decay = takes_weight_decay(p)
        group = groups.setdefault((scale, decay), {"params": [], "lr_scale": scale})
        if not decay:
            group["weight_decay"] = 0.0
        group["params"].append(p)
    return list(groups.values())
