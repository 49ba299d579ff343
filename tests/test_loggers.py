"""The CSV logger behind metrics.csv (learning curves, resumed runs) survives interruptions."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fmnist.utils.loggers import CSVLogger


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
