"""The leaderboard (`scripts/runs.py`): complete training runs by default, one line each at 80 columns; every run
with an honest status behind --all; a file only when asked for."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from fmnist import PROJECT_ROOT

from conftest import only_run_dir, run_cli, tiny_overrides


def leaderboard(root: Path, *args: str) -> subprocess.CompletedProcess:
    # PYTHONPATH: scripts/ is the script's own path entry; the package must be this checkout's
    result = run_cli(
        "scripts/runs.py", "--root", str(root), *args, env={"COLUMNS": "80", "PYTHONPATH": str(PROJECT_ROOT)}
    )
    assert result.returncode == 0, result.stderr
    return result


def table_rows(output: str) -> list[list[str]]:
    """The table's rows, split on its two-space column gaps (after the title, header and rule lines)."""
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    return [line.split("  ") for line in lines[rule + 1 :] if line and not line.startswith("--all")]


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """An outputs/ folder as a user's looks after a while: a complete training run (real, one tiny epoch), a predict
    run of its checkpoint (real), and the states runs are left in: killed after a checkpoint (a multirun job),
    failed at launch (only .hydra/), and one still running (its log held open by a live process)."""
    root = tmp_path_factory.mktemp("outputs")
    result = run_cli("train.py", *tiny_overrides(tiny_data, root), "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    complete = only_run_dir(root)
    shirt = Image.new("L", (28, 28), 0)
    shirt.paste(200, (6, 4, 22, 24))
    shirt.save(root / "shirt.png")
    ckpt = complete / "checkpoints" / "last.ckpt"
    result = run_cli("predict.py", f"images={root / 'shirt.png'}", f"ckpt_path={ckpt}", f"paths.log_dir={root}")
    assert result.returncode == 0, result.stderr[-3000:]
    interrupted = root / "train" / "multiruns" / "2026-01-02_03-04-05_000001" / "1"
    shutil.copytree(complete, interrupted)
    (interrupted / "metrics.json").unlink()
    failed, running = (
        root / "train" / "runs" / "2026-01-01_00-00-00_000001",
        root / "train" / "runs" / "2026-01-03_00-00-00_000001",
    )
    for run in (failed, running):
        shutil.copytree(complete / ".hydra", run / ".hydra")
    debug = root / "train" / "runs" / "2026-01-04_00-00-00_000001"  # as `python train.py debug=fdr` leaves it
    shutil.copytree(complete, debug)
    hydra = OmegaConf.load(debug / ".hydra" / "hydra.yaml")
    hydra.hydra.runtime.choices.debug = "fdr"
    OmegaConf.save(hydra, debug / ".hydra" / "hydra.yaml")
    return {"root": root, "complete": complete, "predict": only_run_dir(root, "predict"), "interrupted": interrupted,
            "failed": failed, "running": running, "debug": debug}  # fmt: skip


def label(run_dir: Path) -> str:
    """What the listing calls a run: its start time from Hydra's folder name (2026-12-07_00-20-32_133732)."""
    stamp = run_dir.name if run_dir.name[0:4].isdigit() and len(run_dir.name) > 4 else run_dir.parent.name
    short = f"{stamp[5:10]} {stamp[11:19].replace('-', ':')}"
    return short if stamp == run_dir.name else f"{short}/{run_dir.name}"


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_default_view_lists_complete_training_runs_one_line_each_and_writes_nothing(runs):
    before = all_files(runs["root"])
    output = leaderboard(runs["root"]).stdout
    assert all_files(runs["root"]) == before, "no file is written unless --csv asks for one"
    assert max(len(line) for line in output.splitlines()) <= 80, output
    metrics = json.loads((runs["complete"] / "metrics.json").read_text())
    scores = [f"{100 * metrics['val/acc_best']:.2f}", f"{100 * metrics['test/acc']:.2f}", metrics["tta"]]
    what = [label(runs["complete"]), metrics["choice/model"], metrics["choice/aug"], str(metrics["epochs"])]
    expected = [*what, *scores]
    assert [[cell.strip() for cell in row if cell.strip()] for row in table_rows(output)] == [expected], output
    assert output.startswith("1 complete run under")


def statuses(output: str) -> dict[str, tuple[str, str]]:
    """run -> (task, status) from the --all view (run, task, model, aug, status, val %, test %)."""
    cells = [[cell.strip() for cell in row if cell.strip()] for row in table_rows(output)]
    return {row[0]: (row[1], row[4]) for row in cells}


HOLD_OPEN = "import sys, time; f = open(sys.argv[1], 'a'); print('ready', flush=True); time.sleep(60)"


def test_all_shows_every_run_with_its_status(runs):
    log = runs["running"] / "train.log"
    holder = subprocess.Popen(  # a live job holds its log open (Hydra's file handler) from start to end
        [sys.executable, "-c", HOLD_OPEN, str(log)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        output = leaderboard(runs["root"], "--all").stdout
    finally:
        holder.kill()
        holder.wait()
    assert max(len(line) for line in output.splitlines()) <= 80, output
    assert statuses(output) == {
        label(runs["complete"]): ("train", "complete"),
        label(runs["predict"]): ("predict", "ended"),  # predict writes no metrics.json: neither complete nor failed
        label(runs["interrupted"]): ("train", "interrupted"),  # checkpoints, no metrics.json: resumable
        label(runs["failed"]): ("train", "failed"),  # nothing but .hydra/
        label(runs["running"]): ("train", "running"),
        label(runs["debug"]): ("train", "debug"),  # complete, but a debug preset's: not on the leaderboard
    }, output
    # the same run once its process is gone: no checkpoint was written, so it failed
    assert statuses(leaderboard(runs["root"], "--all").stdout)[label(runs["running"])] == ("train", "failed")


def test_csv_is_written_when_asked_with_every_column(runs, tmp_path):
    path = tmp_path / "board" / "runs.csv"
    output = leaderboard(runs["root"], "--all", "--csv", str(path)).stdout
    assert f"CSV: {path}" in output
    with open(path, newline="") as f:
        rows = {Path(r["run_dir"]): r for r in csv.DictReader(f)}
    assert set(rows) == {r.resolve() for k, r in runs.items() if k != "root"}
    complete = rows[runs["complete"].resolve()]
    metrics = json.loads((runs["complete"] / "metrics.json").read_text())
    assert float(complete["test_acc"]) == pytest.approx(metrics["test/acc"]) and complete["status"] == "complete"
    assert "trainer.max_epochs=1" in complete["overrides"] and complete["seed"] == "42"


def test_a_csv_path_that_cannot_be_written_is_refused_before_listing(runs, tmp_path):
    (tmp_path / "a_file").write_text("")
    for path, problem in ((tmp_path, "it is a folder"), (tmp_path / "a_file" / "runs.csv", "is a file, not a folder")):
        result = run_cli("scripts/runs.py", "--root", str(runs["root"]), "--csv", str(path),
                         env={"PYTHONPATH": str(PROJECT_ROOT)})  # fmt: skip
        assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert "complete run" not in result.stdout


def test_an_unknown_task_lists_the_tasks_there_are(runs):
    output = leaderboard(runs["root"], "--task", "trian").stdout
    assert "No 'trian' runs; the tasks under" in output and "train" in output.split("the tasks under")[1], output


def test_wide_view_gives_the_details_whole(runs):
    output = leaderboard(runs["root"], "--wide").stdout
    (row,) = [line for line in output.splitlines() if label(runs["complete"]) in line]
    assert str(runs["complete"].resolve()) in row and "trainer.max_epochs=1" in row and "…" not in row


def test_a_training_run_under_another_task_name_is_still_a_training_run(runs, tmp_path):
    """`task_name` names the folder (benchmarks/bench_train.py uses task_name=bench); the task is the entry config."""
    run = tmp_path / "bench" / "default" / "seed0"
    shutil.copytree(runs["complete"], run)
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("task_name: train", "task_name: bench"))
    assert "task_name: bench" in config.read_text()
    rows = table_rows(leaderboard(tmp_path).stdout)
    assert [row[0].strip() for row in rows] == ["default/seed0"]
    listed = statuses(leaderboard(tmp_path, "--all", "--task", "train").stdout)
    assert listed == {"default/seed0": ("train", "complete")}


def test_a_long_run_path_keeps_its_distinguishing_end(runs, tmp_path):
    for name in ("lr_0.1", "lr_0.2"):
        shutil.copytree(runs["complete"], tmp_path / "ablations" / "learning_rate_sweep" / name)
    listed = statuses(leaderboard(tmp_path, "--all").stdout)
    assert sorted(listed) == ["…ate_sweep/lr_0.1", "…ate_sweep/lr_0.2"], listed
