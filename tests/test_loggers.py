"""The CSV logger behind metrics.csv (learning curves, resumed runs) survives interruptions; a W&B run's config is
the composed Hydra config, and the command says once how to upload an offline run."""

from __future__ import annotations

import csv
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fmnist.utils.loggers import CSVLogger

from conftest import only_run_dir, run_cli, tiny_overrides


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def test_resumed_logger_continues_the_file_and_adds_columns(tmp_path: Path) -> None:
    first = CSVLogger(save_dir=str(tmp_path), name="", version="")
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.save()
    resumed = CSVLogger(save_dir=str(tmp_path), name="", version="")
    resumed.log_metrics({"train/loss": 0.5, "val/acc": 0.9}, step=1)
    resumed.save()
    header, rows = read_rows(tmp_path / "metrics.csv")
    assert header == ["step", "train/loss", "val/acc"]
    assert [(r["step"], r["train/loss"], r["val/acc"]) for r in rows] == [("0", "1.0", ""), ("1", "0.5", "0.9")]


def test_interrupted_save_leaves_a_readable_file_and_is_retried(tmp_path: Path, monkeypatch) -> None:
    logger = CSVLogger(save_dir=str(tmp_path), name="", version="")
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    # Ctrl-C while the file is written, on the save that brings a new column (Lightning's own writer then leaves
    # its header out of step with its rows)
    logger.log_metrics({"val/acc": 0.9}, step=1)

    def interrupted(self, rows):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(csv.DictWriter, "writerows", interrupted)
        with pytest.raises(KeyboardInterrupt):
            logger.save()
    assert read_rows(tmp_path / "metrics.csv") == (["step", "train/loss"], [{"step": "0", "train/loss": "1.0"}])
    logger.save()  # what Lightning's finalize does after the interrupt
    logger.log_metrics({"train/loss": 0.4}, step=2)
    logger.save()
    header, rows = read_rows(tmp_path / "metrics.csv")
    assert header == ["step", "train/loss", "val/acc"]
    assert [r["step"] for r in rows] == ["0", "1", "2"] and rows[1]["val/acc"] == "0.9"
    assert not list(tmp_path.glob(".metrics.csv.*")), "no temporary file left behind"


def test_rows_wider_than_the_header_are_dropped_on_resume(tmp_path: Path) -> None:
    # what an interrupted run of Lightning's writer left: a row appended with more columns than the header
    (tmp_path / "metrics.csv").write_text("step,train/loss\n0,1.0\n1,0.9,0.5\n2,0.8\n")
    resumed = CSVLogger(save_dir=str(tmp_path), name="", version="")
    resumed.log_metrics({"train/loss": 0.7, "val/acc": 0.9}, step=3)
    resumed.save()
    header, rows = read_rows(tmp_path / "metrics.csv")
    assert header == ["step", "train/loss", "val/acc"]
    assert [r["step"] for r in rows] == ["0", "2", "3"]


def wandb_records(path: Path) -> Iterator:
    """The records of an offline W&B run file (`run-<id>.wandb`, what `wandb sync` uploads): a 7-byte header, then
    LevelDB-log chunks (crc32c, little-endian length, type: 1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks, each
    record a protobuf `Record`. wandb 0.31 writes no files/config.yaml offline, and has no reader of its own."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B", data[:7]
    pos, payload = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        payload += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(payload)
            payload = b""
            yield record


def wandb_config(offline_run: Path) -> dict:
    """The config an offline W&B run recorded (the run's initial config, then every update, in order)."""
    (run_file,) = offline_run.glob("run-*.wandb")
    config: dict = {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        config.update({item.key: json.loads(item.value_json) for item in items})
    return config


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_wandb_config_is_the_hydra_config_and_the_sync_hint_is_printed_once(tiny_data, tmp_path):
    offline = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "NETRC": str(tmp_path / "no-netrc")}
    overrides = [*tiny_overrides(tiny_data, tmp_path), "logger=wandb", "trainer.max_epochs=1"]
    result = run_cli("train.py", *overrides, env=offline)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    run_dir = only_run_dir(tmp_path)
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert output.count("wandb sync ") == 1 and f"wandb sync {offline_run}" in output, output[-3000:]

    composed = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    config = {k: v for k, v in wandb_config(offline_run).items() if k != "_wandb"}  # _wandb: W&B's own record
    assert set(config) == set(composed), f"not in the Hydra config: {sorted(set(config) - set(composed))}"
    assert {"data", "model", "trainer", "aug"} <= set(config) and "batch_size" not in config
    assert config["data"]["batch_size"] == composed["data"]["batch_size"] == 50
