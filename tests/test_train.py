"""The course's training loop: exact resume (Ctrl-C and a real kill), NaN guard, aux optimiser."""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib import train as trainer

TOTAL_STEPS = 13  # 20 samples in batches of 4: the run crosses two epoch boundaries


def make_run(init_seed: int = 0, loader_seed: int | None = None):
    """A small but fully random run: shuffled data, dropout, torch and NumPy noise, a schedule.

    The data order comes from the global generator, or from the loader's own one if seeded.
    """
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 8))
    data = torch.randn(20, 8, generator=torch.Generator().manual_seed(1))
    generator = None if loader_seed is None else torch.Generator().manual_seed(loader_seed)
    loader = DataLoader(TensorDataset(data), batch_size=4, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    return model, loader, optimizer, scheduler


def noisy_mse(model, batch):
    (x,) = batch
    noisy = x + float(np.random.uniform(0.0, 0.1)) * torch.randn_like(x)
    mse = torch.mean((model(noisy) - x) ** 2)
    return {"loss": mse, "rmse": mse.sqrt()}


def run(tmp_path: Path | None = None, init_seed: int = 0, steps: int = TOTAL_STEPS,
        loader_seed: int | None = None, **kwargs):
    model, loader, optimizer, scheduler = make_run(init_seed, loader_seed)
    if tmp_path is not None:
        kwargs.update(checkpoint_path=tmp_path / "run.pt", log_csv=tmp_path / "run.csv")
    result = trainer.train(model, loader, noisy_mse, optimizer, scheduler=scheduler,
                           steps=steps, seed=0, log_every=1, progress=False, **kwargs)
    return model, optimizer, result


def without_time(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def assert_same_run(model, optimizer, result, reference):
    ref_model, ref_optimizer, ref_result = reference
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ref_model.state_dict()[name]), name
    for moments, ref_moments in zip(optimizer.state.values(), ref_optimizer.state.values(),
                                    strict=True):
        assert torch.equal(moments["exp_avg_sq"], ref_moments["exp_avg_sq"])
    assert without_time(result.history) == without_time(ref_result.history)


@pytest.fixture(scope="module")
def reference():
    return run()


def kill_at_step(tmp_path: str, kill_step: int) -> None:
    """Entry point of the subprocess in test_kill_and_resume: SIGKILL, nothing saved at exit."""

    def kill(step, values):
        if step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    run(Path(tmp_path), checkpoint_every=4, callback=kill)


def test_reference_run_really_trains(reference):
    _, _, result = reference
    steps, losses = result.curve("loss")
    assert list(steps) == list(range(1, TOTAL_STEPS + 1))
    assert losses[-3:].mean() < 0.8 * losses[:3].mean()
    assert result.history[-1]["epoch"] == 2 and not result.interrupted


@pytest.mark.parametrize("loader_seed", [None, 5])
def test_ctrl_c_saves_and_resume_matches_uninterrupted_run(tmp_path, reference, loader_seed):
    if loader_seed is not None:
        reference = run(loader_seed=loader_seed)

    def press_ctrl_c(step, values):
        if step == 7:  # mid-epoch: the resume must replay the data loader's position
            signal.raise_signal(signal.SIGINT)

    # The handler in place before training (Python's default, or SIG_IGN in a background job,
    # as under CI) must be back afterwards.
    before = signal.getsignal(signal.SIGINT)
    _, _, stopped = run(tmp_path, callback=press_ctrl_c, loader_seed=loader_seed)
    assert signal.getsignal(signal.SIGINT) is before
    assert stopped.interrupted and stopped.step == 7
    assert (tmp_path / "run.pt").is_file()
    # A differently initialised model proves the weights come from the checkpoint.
    model, optimizer, result = run(tmp_path, init_seed=99, loader_seed=loader_seed)
    assert result.step == TOTAL_STEPS and not result.interrupted
    assert_same_run(model, optimizer, result, reference)


def test_kill_and_resume_matches_uninterrupted_run(tmp_path, reference):
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import test_train; test_train.kill_at_step({str(tmp_path)!r}, 6)")
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    with open(tmp_path / "run.csv") as stream:
        assert len(list(csv.DictReader(stream))) == 6  # the killed run logged steps 1..6
    assert torch.load(tmp_path / "run.pt", weights_only=True)["step"] == 4

    model, optimizer, result = run(tmp_path, init_seed=99)
    assert_same_run(model, optimizer, result, reference)
    with open(tmp_path / "run.csv") as stream:
        rows = list(csv.DictReader(stream))
    # Steps 5 and 6 of the killed run were redone, not duplicated in the log.
    assert [int(row["step"]) for row in rows] == list(range(1, TOTAL_STEPS + 1))
    assert np.allclose([float(row["loss"]) for row in rows], result.curve("loss")[1])


def test_callback_can_stop_the_run_like_ctrl_c(tmp_path, reference):
    _, _, stopped = run(tmp_path, callback=lambda step, values: step == 9)
    assert stopped.interrupted and stopped.step == 9
    model, optimizer, result = run(tmp_path, init_seed=99)
    assert_same_run(model, optimizer, result, reference)


def test_resume_can_extend_a_finished_run(tmp_path, reference):
    run(tmp_path, steps=5)
    model, optimizer, result = run(tmp_path, init_seed=99)
    assert_same_run(model, optimizer, result, reference)


def test_nan_guard_stops_before_updating_the_model():
    model, loader, optimizer, _ = make_run()
    snapshots = []

    def blows_up_at_step_3(net, batch):
        snapshots.append([p.detach().clone() for p in net.parameters()])
        losses = noisy_mse(net, batch)
        if len(snapshots) == 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    with pytest.raises(trainer.NonFiniteLossError, match=r"step 3: the loss is not finite"):
        trainer.train(model, loader, blows_up_at_step_3, optimizer, steps=10, progress=False)
    for param, before in zip(model.parameters(), snapshots[-1], strict=True):
        assert torch.equal(param, before)


def test_aux_optimizer_trains_only_the_aux_loss():
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    model.quantile = nn.Parameter(torch.zeros(()))
    data = DataLoader(TensorDataset(torch.randn(16, 4)), batch_size=4)

    def loss_fn(net, batch):
        (x,) = batch
        return {"loss": torch.mean((net(x) - x) ** 2), "aux_loss": (net.quantile - 3.0) ** 2}

    main = torch.optim.SGD([model.weight, model.bias], lr=0.1)
    aux = torch.optim.SGD([model.quantile], lr=0.1)
    result = trainer.train(model, data, loss_fn, main, aux_optimizer=aux, steps=60,
                           progress=False)
    assert abs(model.quantile.item() - 3.0) < 1e-3
    assert result.curve("aux_loss")[1][-1] < 1e-4
    with pytest.raises(ValueError, match="both optimizer and aux_optimizer"):
        trainer.train(model, data, loss_fn, main, aux_optimizer=torch.optim.SGD(
            model.parameters(), lr=0.1), steps=1, progress=False)


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    data = DataLoader(TensorDataset(100 * torch.randn(8, 4)), batch_size=8)

    def loss_fn(net, batch):
        return {"loss": torch.mean((net(batch[0]) - batch[0]) ** 2)}

    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer.train(model, data, loss_fn, optimizer, steps=1, clip_grad_norm=1e-3,
                  progress=False)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < torch.linalg.vector_norm(after - before) <= 1e-3 * (1 + 1e-5)


def test_clear_errors_for_wrong_arguments():
    model, loader, optimizer, _ = make_run()
    with pytest.raises(ValueError, match="'loss' entry"):
        trainer.train(model, loader, lambda net, b: {"mse": net(b[0]).sum()}, optimizer,
                      steps=1, progress=False)
    with pytest.raises(ValueError, match="checkpoint_path"):
        trainer.train(model, loader, noisy_mse, optimizer, steps=1, checkpoint_every=5)
    with pytest.raises(ValueError, match="no batch"):
        trainer.train(model, [], noisy_mse, optimizer, steps=1, progress=False)


def test_cpu_mixed_precision_needs_native_bfloat16(monkeypatch):
    model, loader, optimizer, _ = make_run()
    monkeypatch.setattr(trainer, "cpu_supports_bfloat16", lambda: False)
    with pytest.raises(ValueError, match="native bfloat16"):
        trainer.train(model, loader, noisy_mse, optimizer, steps=1, amp=True, device="cpu",
                      progress=False)


def test_codec_training_command_refuses_amp_without_bfloat16(monkeypatch, tmp_path):
    from course_lib.recipes import codec_training

    monkeypatch.setattr(trainer, "cpu_supports_bfloat16", lambda: False)
    with pytest.raises(SystemExit, match="--amp: .*native bfloat16"):
        codec_training.main(["--run-dir", str(tmp_path / "run"), "--device", "cpu", "--amp"])


def test_cpu_mixed_precision_trains_in_bfloat16(monkeypatch):
    # torch emulates bfloat16 where the CPU lacks it (slowly), so the path runs on every CPU
    monkeypatch.setattr(trainer, "cpu_supports_bfloat16", lambda: True)
    model, loader, optimizer, _ = make_run()
    seen = []

    def loss_fn(net, batch):
        out = net(batch[0])
        seen.append(out.dtype)
        return {"loss": ((out.float() - batch[0]) ** 2).mean()}

    before = [p.detach().clone() for p in model.parameters()]
    trainer.train(model, loader, loss_fn, optimizer, steps=3, amp=True, device="cpu",
                  progress=False)
    assert seen == [torch.bfloat16] * 3
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_pick_device():
    assert trainer.pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert trainer.pick_device().type == expected


def test_time_budget_stops_after_its_minutes(monkeypatch):
    assert trainer.time_budget(None) is None
    for minutes in (0, -1):
        with pytest.raises(ValueError, match="must be positive"):
            trainer.time_budget(minutes)
    now = [1000.0]
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: now[0])
    stop = trainer.time_budget(0.5)
    now[0] += 29.9
    assert not stop(1, {})
    now[0] += 0.1
    assert stop(2, {})
