"""What the benchmark scripts share: run a project command as a timed subprocess, read the run's
metrics.json, and the mean ± sd over seeds.

bench_train.py, bench_sweep.py, bench_gan.py, bench_ddp.py and bench_ensemble.py each had a private copy of "run
`python train.py ...` (or gan.py, scripts/ensemble.py), time it, read metrics.json"; now they have one.
The helpers take each script's command line as it is (script path, argument order, `hydra.run.dir=`): nothing is added
or reordered, so the runs, their output directories and the printed commands stay what they were.

Imported as `from _common import ...`: the scripts run as `python benchmarks/<script>.py`, so benchmarks/ is on
sys.path. Standard library only, and no project root of its own: the callers pass theirs as `cwd`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def run_timed(script: str, args: Sequence[str], *, cwd: Path, echo: bool = False, log: Path | None = None) -> float:
    """`<sys.executable> <script> <args>` in `cwd`; returns the wall seconds from start to exit.

    echo: print the full command ("+ ...") before it runs. Output goes to the terminal and a failure raises
    CalledProcessError, unless `log` is given: then stdout and stderr go to that file (first line: the command) and a
    failure stops the benchmark with a message naming the log.
    """
    command = [sys.executable, script, *args]
    if echo:
        print("+ " + " ".join(command), flush=True)
    if log is None:
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=cwd)
        return time.perf_counter() - start
    shown = f"python {script} {' '.join(args)}"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        f.write(shown + "\n")
        f.flush()
        code = subprocess.call(command, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"failed (exit {code}): {shown}\n  see {log}")
    return time.perf_counter() - start


def run_entry(
    script: str, args: Sequence[str], run_dir: Path, *, cwd: Path, log: Path | None = None
) -> tuple[dict, float]:
    """`run_timed(script, args)`, then the run's metrics: (run_dir/metrics.json, wall seconds).

    `args` sets `hydra.run.dir=<run_dir>` itself, where the caller has always put it in its command line.
    """
    seconds = run_timed(script, args, cwd=cwd, log=log)
    return json.loads((run_dir / "metrics.json").read_text()), seconds


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0.0 for a single value) of per-seed figures.

    fmean, as bench_sweep.py had it (its JSON keeps the raw floats); bench_train.py's statistics.mean differed from it
    by at most the last bit, far below the 4 (wall time: 1) decimals it prints.
    """
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), sd
