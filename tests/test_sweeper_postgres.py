"""Sweeps on a real PostgreSQL server (tests/pg_server.py starts a throwaway one): two workers on one study, a worker
killed with SIGKILL mid-trial and its trial retried by another, storages that cannot be opened, and optuna-dashboard
on the study, rendered by headless chromium. No mocks: every sweep is `train.py -m hparams_search=cnn` on tiny data.

FMNIST_DASHBOARD_SCREENSHOT=docs/img/optuna_dashboard.png keeps the dashboard screenshot (docs/sweeps_database.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pg_server
import pytest
from optuna.trial import TrialState

from fmnist import PROJECT_ROOT

from conftest import tiny_data_overrides

# About 90 s in all (several sweeps, a server, a browser): slow, run by `pytest -m slow` (the second step of .ci/run)
pytestmark = pytest.mark.slow
STORAGE_OVERRIDE = "hydra.sweeper.storage=${oc.env:FMNIST_OPTUNA_STORAGE}"  # the password stays in the environment
HEARTBEAT = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2", "hydra.sweeper.retry_failed=1"]


@pytest.fixture(scope="session")
def pg():
    try:
        server = pg_server.start()
    except (RuntimeError, OSError, ImportError, subprocess.SubprocessError) as e:
        pytest.skip(f"no PostgreSQL server could be started: {e}")
    yield server
    server.stop()


def sweep_command(tiny_data, root: Path, study: str, n_trials: int, *extra: str) -> list[str]:
    """The pattern of tests/test_sweeper.py: the CNN space on tiny data, one thread, small widths."""
    data = [o for o in tiny_data_overrides(tiny_data, root) if not o.startswith("data.batch_size=")]
    return [
        sys.executable, str(PROJECT_ROOT / "train.py"), "-m", "hparams_search=cnn", *data, "threads=1",
        "data.batch_size=choice(50,100)", "model.backbone.stages=choice([[8],[16]],[[16],[32]])",
        "model.backbone.hidden=64", STORAGE_OVERRIDE,
        f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={n_trials}", *extra,
    ]  # fmt: skip


def start(cmd: list[str], storage: str) -> subprocess.Popen:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline", "FMNIST_OPTUNA_STORAGE": storage}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=PROJECT_ROOT)


def finish(proc: subprocess.Popen, timeout: int = 300) -> str:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-4000:]
    return output


def no_password_in(root: Path, password: str) -> None:
    for path in root.rglob("*"):
        if path.is_file() and path.suffix not in (".ckpt", ".pt", ".png"):
            assert password not in path.read_text(errors="replace"), path


@pytest.fixture(scope="module")
def two_workers(pg, tiny_data, tmp_path_factory):
    """Two sweeps started together on one study, asked for 2 and 3 trials; the second one is given the URL with its
    password on the command line (the worst case), the first through the environment."""
    root = tmp_path_factory.mktemp("two-workers")
    t0 = time.monotonic()
    commands = {n: sweep_command(tiny_data, root / f"w{n}", "two", n, "trainer.max_epochs=1") for n in (2, 3)}
    commands[3][commands[3].index(STORAGE_OVERRIDE)] = f"hydra.sweeper.storage={pg.url()}"
    procs = [start(commands[n], pg.url()) for n in (2, 3)]
    outputs = [finish(p) for p in procs]
    print(f"two workers: {time.monotonic() - t0:.0f} s")
    return root, outputs, optuna.load_study(study_name="two", storage=pg.url())


def test_two_workers_share_one_study_without_repeats(pg, two_workers):
    root, outputs, study = two_workers
    trials = study.get_trials()
    print(f"asked 2 + 3, finished {sum(t.state == TrialState.COMPLETE for t in trials)}: "
          f"{[(t.number, t.state.name) for t in trials]}")  # fmt: skip
    assert sorted(t.number for t in trials) == list(range(5))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == 5  # seeded per trial number: workers started together do not repeat each other
    written = {"w2": "storage: ${oc.env:FMNIST_OPTUNA_STORAGE}", "w3": "storage: postgresql://fmnist:***@127.0.0.1"}
    for worker, storage in written.items():
        (sweep_dir,) = (root / worker / "train" / "multiruns").iterdir()
        assert "storage: postgresql://fmnist:***@127.0.0.1" in (sweep_dir / "optimization_results.yaml").read_text()
        assert storage in (sweep_dir / "multirun.yaml").read_text()  # the interpolation as written, or redacted
    # the literal URL's jobs reconnected to the study through the environment, which their saved configs name
    trial_configs = list((root / "w3").rglob(".hydra/hydra.yaml"))
    assert len(trial_configs) == 3 and all("${oc.env:FMNIST_SWEEP_STORAGE}" in p.read_text() for p in trial_configs)
    no_password_in(root, pg.password)  # in no file of either worker: configs, logs, results
    assert not any(pg.password in out for out in outputs)


def test_a_killed_worker_s_trial_fails_and_is_retried_by_a_live_one(pg, tiny_data, tmp_path):
    storage, db = pg.url(), optuna.storages.RDBStorage(pg.url())  # one connection pool for all the polling below
    # many epochs: the first worker is still inside its trial when it is killed
    dead = start(sweep_command(tiny_data, tmp_path / "a", "kill", 2, "trainer.max_epochs=300", *HEARTBEAT), storage)
    deadline = time.monotonic() + 240
    while True:  # until the trial has reported an epoch through the storage: mid-trial for sure
        assert dead.poll() is None and time.monotonic() < deadline, dead.stdout.read()[-3000:] if dead.stdout else ""
        try:
            running = optuna.load_study(study_name="kill", storage=db).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            running = []
        if running and running[0].intermediate_values:
            break
        time.sleep(0.5)
    victim = running[0]
    os.kill(dead.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    dead.communicate()
    live = start(sweep_command(tiny_data, tmp_path / "b", "kill", 2, "trainer.max_epochs=1", *HEARTBEAT), storage)
    detected = None
    while live.poll() is None:
        state = optuna.load_study(study_name="kill", storage=db).trials[victim.number].state
        if detected is None and state == TrialState.FAIL:
            detected = time.monotonic() - killed_at
        time.sleep(0.2)
    output = finish(live)
    trials = optuna.load_study(study_name="kill", storage=db).get_trials()
    assert trials[victim.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE, [(t.number, t.state) for t in trials]
    assert retries[0].params == victim.params and f"retries trial {victim.number}" in output
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2 and len(trials) == 3  # the live worker's 2 (the retry among them); nothing twice
    print(f"killed trial {victim.number} after {len(victim.intermediate_values)} epoch(s); FAIL seen "
          f"{detected:.1f} s after SIGKILL (grace 2 s, heartbeat 1 s; the live worker started after the kill); "
          f"retried as trial {retries[0].number}; asked 2, finished {len(complete)}")  # fmt: skip


@pytest.mark.parametrize("case", ["unknown dialect", "server down", "wrong password"])
def test_a_storage_that_cannot_be_opened_stops_before_any_trial(case, pg, tiny_data, tmp_path):
    secret = "Wr0ng-Pa55word-x" if case == "wrong password" else pg.password
    port = pg_server.free_port() if case == "server down" else pg.port
    url = pg.url(password=secret).replace(f":{pg.port}/", f":{port}/")
    if case == "unknown dialect":
        url = url.replace("postgresql://", "postgrez://")
    cmd = sweep_command(tiny_data, tmp_path, "bad", 1, "trainer.max_epochs=1")
    cmd[cmd.index(STORAGE_OVERRIDE)] = f"hydra.sweeper.storage={url}"  # literal on the command line: the worst case
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline"})  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    shown = url.replace(f":{secret}@", ":***@")
    assert f"hydra.sweeper.storage={shown}: cannot open the study storage" in output, output[-3000:]
    assert secret not in output
    made = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(n.endswith((".png", ".csv", ".yaml", ".db")) for n in made), made  # nothing like a result


def test_optuna_dashboard_serves_the_study_and_chromium_renders_it(pg, two_workers, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    port = pg_server.free_port()
    dashboard = subprocess.Popen(
        [str(Path(sys.executable).parent / "optuna-dashboard"), pg.url(), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        studies = wait_for_json(f"http://127.0.0.1:{port}/api/studies", dashboard)["study_summaries"]
        (study,) = [s for s in studies if s["study_name"] == "two"]
        page = f"http://127.0.0.1:{port}/dashboard/studies/{study['study_id']}"
        browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--window-size=1400,900", "--virtual-time-budget=10000",
                   f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
        dom = subprocess.run([*browser, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
        assert "two" in dom and "History" in dom, dom[-2000:]
        png = tmp_path / "dash.png"
        subprocess.run([*browser, f"--screenshot={png}", page], capture_output=True, timeout=120, check=True)
        from PIL import Image

        with Image.open(png) as image:
            assert image.size == (1400, 900)
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50  # a rendered page, not blank
        if os.environ.get("FMNIST_DASHBOARD_SCREENSHOT"):
            shutil.copyfile(png, os.environ["FMNIST_DASHBOARD_SCREENSHOT"])
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


def wait_for_json(url: str, server: subprocess.Popen, timeout: float = 60) -> dict:
    import json

    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, server.stderr.read()[-2000:] if server.stderr else ""
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout} s"
            time.sleep(0.5)
