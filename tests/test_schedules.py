"""The one-cycle schedule on a time budget: OneCycleLR without one, annealed by the budget's end with one."""

from __future__ import annotations

import socket
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from hydra.utils import instantiate

from fmnist.models import schedules
from fmnist.models.classifier import Classifier
from fmnist.models.schedules import BudgetedOneCycleLR, budget_seconds

from conftest import compose_cfg, tiny_overrides


def sgd(lr: float = 0.2) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def lrs(scheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_without_a_budget_it_is_torchs_one_cycle() -> None:
    ours = BudgetedOneCycleLR(sgd(), total_steps=100, pct_start=0.25)
    theirs = torch.optim.lr_scheduler.OneCycleLR(sgd(), max_lr=0.2, total_steps=100, pct_start=0.25,
                                                 cycle_momentum=False)  # fmt: skip
    assert lrs(ours, 100) == pytest.approx(lrs(theirs, 100), rel=1e-9, abs=1e-12)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_binding_budget_anneals_by_wall_time(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    scheduler = BudgetedOneCycleLR(sgd(0.2), total_steps=10_000, budget="00:00:01:40", pct_start=0.25)
    peak_at = 0.25 * 10_000 - 1  # warm-up's end, in steps, as OneCycleLR counts it
    clock.now += 100 * peak_at / 9_999  # the budget's share of the warm-up has passed, after a few steps
    lrs(scheduler, 3)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.2, rel=1e-6), "the peak comes with time, not steps"
    clock.now += 100  # the budget is over long before the 10,000 steps
    lrs(scheduler, 1)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.2 / 25 / 1e4)


def test_the_steps_bind_when_they_end_first(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    scheduler = BudgetedOneCycleLR(sgd(0.2), total_steps=20, budget={"hours": 1})
    lrs(scheduler, 19)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.2 / 25 / 1e4)


def test_a_resumed_schedule_continues_from_the_saved_elapsed_time(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    first = BudgetedOneCycleLR(sgd(), total_steps=10_000, budget=100)
    lrs(first, 5)
    clock.now += 60
    state = first.state_dict()
    clock.now += 3600  # a later process: the monotonic clock's origin means nothing across processes
    resumed = BudgetedOneCycleLR(sgd(), total_steps=10_000, budget=100)
    resumed.load_state_dict(state)
    assert resumed.elapsed() == pytest.approx(60) and resumed.last_epoch == first.last_epoch
    assert resumed.progress() == pytest.approx(0.6), "60 s of a 100-s budget"


@pytest.mark.parametrize("budget", ["4:30", "00:00:aa:00", {"mins": 3}, 0, "00:00:00:00"])
def test_a_malformed_budget_is_refused(budget) -> None:
    with pytest.raises(ValueError, match="budget"):
        budget_seconds(budget)


def test_budget_formats_match_lightnings_max_time() -> None:
    assert budget_seconds("01:02:03:04") == 93784
    assert budget_seconds({"minutes": 4, "seconds": 30}) == 270
    assert budget_seconds(None) is None


def test_an_endless_step_count_runs_on_the_budget_alone(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    scheduler = BudgetedOneCycleLR(sgd(0.2), total_steps=float("inf"), budget=100)  # trainer.max_epochs=-1
    clock.now += 25  # pct_start of the budget
    lrs(scheduler, 1)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="finite"):
        BudgetedOneCycleLR(sgd(), total_steps=float("inf"))


def test_a_resume_keeps_its_own_budget(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(schedules.time, "monotonic", clock)
    first = BudgetedOneCycleLR(sgd(), total_steps=10_000, budget=100)
    clock.now += 50
    resumed = BudgetedOneCycleLR(sgd(), total_steps=20_000, budget=200)  # resumed with a longer max_time
    resumed.load_state_dict(first.state_dict())
    assert (resumed.budget_s, resumed.total_steps) == (200, 20_000)
    assert resumed.progress() == pytest.approx(0.25)


def test_the_classifier_shares_one_clock_between_ddp_replicas(tiny_data, tmp_path) -> None:
    overrides = [*tiny_overrides(tiny_data, tmp_path), "model=resnet", "trainer.max_time=00:00:01:00"]
    model = instantiate(compose_cfg("train", overrides, tmp_path / "run").model)
    for world_size in (1, 2):
        model.trainer = SimpleNamespace(estimated_stepping_batches=100, max_epochs=1, world_size=world_size)
        scheduler = model.configure_optimizers()["lr_scheduler"]["scheduler"]
        assert scheduler.budget_s == 60
        assert (scheduler.reduce_elapsed is not None) == (world_size > 1)


def replica(rank: int, port: int, results) -> None:
    """One of two gloo processes whose clocks disagree by 30 s; both use the Classifier's reduction."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    scheduler = BudgetedOneCycleLR(sgd(), total_steps=1_000_000, budget=100)
    scheduler._clock_start -= 30 * rank  # process 1 started 30 s earlier
    scheduler.reduce_elapsed = partial(Classifier.max_over_processes, SimpleNamespace(device="cpu"))
    scheduler.step()
    results[rank] = (scheduler.get_last_lr()[0], scheduler.progress())
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_ddp_replicas_step_at_the_same_learning_rate() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(replica, args=(port, results), nprocs=2)
        (lr0, progress0), (lr1, progress1) = results[0], results[1]
    assert lr0 == lr1 and progress0 == progress1 >= 0.3  # the slower clock (30 s of 100) for both
