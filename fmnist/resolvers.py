"""The project's OmegaConf resolvers, registered when this module is imported (by fmnist.task, so by every
entry point, and by tests and benchmarks that compose configs themselves)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf

from fmnist import PACKAGE_DIR, PROJECT_ROOT
from fmnist.utils.run_info import run_dir_of


def _resume_dir(ckpt_path: str | None, default: str) -> str:
    run = run_dir_of(ckpt_path)
    return str(run) if run is not None else default


def _hydra_subdir(ckpt_path: str | None, output_dir: str, stamp: str) -> str:
    """Where Hydra records the job's config: `.hydra`, except in a run being resumed in place, whose first
    `.hydra/` stays what started it (runs are listed and rebuilt from it) and each resume attempt adds its own
    `.hydra/resumed_<time>/` — also an attempt refused later, e.g. for asking another network."""
    run = run_dir_of(ckpt_path)
    if run is not None and run == Path(output_dir).resolve():
        return f".hydra/resumed_{stamp}"
    return ".hydra"


def _input_stats(*args: Any) -> ListConfig:
    from fmnist.models.components.timm_backbone import input_stats  # timm is imported only when a config asks

    return ListConfig(input_stats(*args))  # a container, so OmegaConf.resolve (`--cfg job --resolve`) can hold it


def register_resolvers() -> None:
    """`${fmnist_root:}` is the project directory; `${fmnist_package:}` the installed package (its shipped/ model);
    `${fmnist_run_dir:ckpt,default}` is the run directory of a checkpoint being resumed (so the run continues in
    place), else `default`; `${fmnist_hydra_subdir:ckpt,output_dir,time}` keeps a resumed run's first `.hydra/`."""
    if not OmegaConf.has_resolver("fmnist_package"):
        OmegaConf.register_new_resolver("fmnist_package", lambda: str(PACKAGE_DIR))
    if not OmegaConf.has_resolver("fmnist_root"):
        OmegaConf.register_new_resolver("fmnist_root", lambda: str(PROJECT_ROOT))
        OmegaConf.register_new_resolver("fmnist_run_dir", _resume_dir)
        OmegaConf.register_new_resolver("fmnist_hydra_subdir", _hydra_subdir)
    if not OmegaConf.has_resolver("fmnist_input_stats"):
        # `${fmnist_input_stats:mean|std,name,in_chans,pretrained,weights}`: normalisation that follows the weights
        OmegaConf.register_new_resolver("fmnist_input_stats", _input_stats)


register_resolvers()
