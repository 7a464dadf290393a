"""One training loop for the whole course.

Every network of the course, from the first autoencoder to the final codec, trains through
:func:`train`::

    result = train(model, loader, loss_fn, optimizer, steps=2000,
                   checkpoint_path="runs/ae.pt", checkpoint_every=500, log_csv="runs/ae.csv")

``loss_fn(model, batch)`` returns a dict of named scalar tensors. The trainer minimises
``losses["loss"]``; every other entry (``"mse"``, ``"bpp"``, ``"psnr"`` …) is only logged. A
model with an auxiliary objective (the entropy model's quantiles in notebook 06) also returns
``"aux_loss"`` and passes an ``aux_optimizer`` holding just those parameters.

What the loop takes care of:

* device: CUDA, then Apple MPS, then CPU (:func:`pick_device`); the batch is moved for you;
* seeding (:func:`seed_everything`), a tqdm progress bar, a loss history and a CSV log;
* mixed precision on CUDA (bfloat16 where supported, else float16 with a gradient scaler),
  and on request (``amp=True``) bfloat16 on a CPU that has it (about twice as fast there);
* gradient clipping, and a guard that stops with :class:`NonFiniteLossError` on a NaN loss;
* checkpoints every ``checkpoint_every`` steps, at the end, and on Ctrl-C (the current step
  finishes first; a second Ctrl-C stops at once). ``resume=True`` continues from the
  checkpoint *exactly*: model, optimisers, scheduler, gradient scaler, step, random number
  generators and the position inside the current epoch of the data loader are restored, so an
  interrupted run ends with the same weights as an uninterrupted one. Calling again with a
  larger ``steps`` continues a finished run (a restored scheduler keeps the milestones it was
  built with);
* ``torchrun``: when ``torch.distributed`` is initialised the model is wrapped in
  ``DistributedDataParallel``; rank 0 alone writes checkpoints, logs and the progress bar.
  Give the loader a ``DistributedSampler`` (the trainer calls its ``set_epoch``). ``loss_fn``
  then receives the wrapped model: call custom methods on :func:`unwrap` ``(model)``.

Exact resume assumes the data order comes from torch's global generator or the loader's own
``generator`` (``DataLoader(..., shuffle=True)`` does), which is the usual case.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

LossFn = Callable[[nn.Module, object], dict]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message says at which step and what to try."""


@dataclass
class TrainResult:
    """What :func:`train` did. ``history`` holds one dict per logged step (see :func:`train`)."""

    history: list[dict[str, float]]
    step: int
    interrupted: bool = False
    checkpoint_path: Path | None = None
    seconds: float = 0.0

    def curve(self, name: str = "loss") -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one logged quantity, ready for ``plt.plot``."""
        rows = [row for row in self.history if name in row]
        if not rows:
            names = sorted({key for row in self.history for key in row})
            raise ValueError(f"{name!r} was not logged; logged names: {names}")
        return np.array([row["step"] for row in rows]), np.array([row[name] for row in rows])


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """``preferred`` if given, else CUDA (this process's ``LOCAL_RANK`` GPU), MPS, then CPU."""
    if preferred is not None:
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (all devices) with one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train(
    model: nn.Module,
    loader,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    aux_optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    device: str | torch.device | None = None,
    seed: int | None = 0,
    amp: bool | None = None,
    clip_grad_norm: float | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    log_csv: str | os.PathLike | None = None,
    log_every: int = 10,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``steps`` optimiser steps in total (resumed steps count).

    Args:
        model: any ``nn.Module``; it is moved to ``device``.
        loader: an iterable of batches (usually a ``DataLoader``), cycled epoch after epoch.
            A batch is a tensor, or a tuple/list/dict of tensors.
        loss_fn: ``loss_fn(model, batch) -> {"loss": scalar tensor, other names: scalars}``.
        optimizer: steps on ``loss`` (+ ``aux_loss``); ``aux_optimizer``, if given, must hold
            parameters of its own, trained by the gradient of ``losses["aux_loss"]``.
        scheduler: a ``torch.optim.lr_scheduler`` object, stepped after every optimiser step.
        seed: seeds every generator at the start of a fresh run (``None`` leaves them alone).
        amp: mixed precision; default on for CUDA, off elsewhere. ``amp=True`` on a CPU
            uses bfloat16 if the CPU supports it natively (:func:`cpu_supports_bfloat16`)
            and raises a ValueError otherwise.
        clip_grad_norm: clip the main parameters' gradient norm to this value.
        checkpoint_path / checkpoint_every / resume: see the module docstring. With
            ``resume=True`` and an existing checkpoint, training continues from it.
        log_csv: write the history to this CSV file as training goes.
        log_every: one history row per ``log_every`` steps, averaging the values in between.
            A row holds ``step``, ``epoch``, ``lr``, ``seconds`` and the losses.
        progress: show a tqdm progress bar.
        callback: ``callback(step, values)`` after each step, ``values`` as Python floats. If
            it returns True the run stops there as on Ctrl-C (a time budget, early stopping).

    Returns:
        A :class:`TrainResult`; ``interrupted`` is true when Ctrl-C or the callback stopped
        the run early.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    if checkpoint_every is not None and (checkpoint_path is None or checkpoint_every < 1):
        raise ValueError("checkpoint_every needs a checkpoint_path and a value >= 1")
    _check_disjoint(optimizer, aux_optimizer)

    device = pick_device(device)
    use_amp = device.type == "cuda" if amp is None else bool(amp)
    amp_dtype = mixed_precision_dtype(device) if use_amp else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    model.to(device)
    rank = dist.get_rank() if _distributed() else 0
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    state = _RunState()
    batches = _BatchStream(loader)
    parts = {"model": model, "optimizer": optimizer, "aux_optimizer": aux_optimizer,
             "scheduler": scheduler, "scaler": scaler}
    if resume and checkpoint_path is not None and checkpoint_path.is_file():
        _load_checkpoint(checkpoint_path, parts, state, batches, rank)
    elif seed is not None:
        seed_everything(seed + rank)
    net = model
    if _distributed():
        device_ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    csv_log = _CsvLog(log_csv, state.history) if log_csv is not None and rank == 0 else None
    main_params = [p for group in optimizer.param_groups for p in group["params"]]
    start_time = time.perf_counter() - state.seconds
    interrupted = False
    bar = tqdm(total=steps, initial=state.step, disable=not progress or rank != 0,
               desc="training", dynamic_ncols=True)
    with bar, _CtrlC() as ctrl_c:
        while state.step < steps:
            net.train()
            batch = _to_device(batches.next(), device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                losses = loss_fn(net, batch)
            values = _as_floats(losses)
            if not all(np.isfinite(list(values.values()))):
                raise NonFiniteLossError(_nan_message(state.step + 1, values, checkpoint_path))

            optimizer.zero_grad(set_to_none=True)
            if aux_optimizer is not None:
                aux_optimizer.zero_grad(set_to_none=True)
            total = losses["loss"]
            if aux_optimizer is not None:
                total = total + losses["aux_loss"]
            scaler.scale(total).backward()
            if clip_grad_norm is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(main_params, clip_grad_norm)
            scaler.step(optimizer)
            if aux_optimizer is not None:
                scaler.step(aux_optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()

            state.step += 1
            state.seconds = time.perf_counter() - start_time
            state.accumulate(values)
            if state.step % log_every == 0 or state.step == steps:
                row = state.log_row(batches.epoch, optimizer.param_groups[0]["lr"])
                if csv_log is not None:
                    csv_log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.4g}", refresh=False)
            bar.update(1)
            stop = callback is not None and bool(callback(state.step, values))
            interrupted = _any_rank(ctrl_c.requested or stop, device)
            due = checkpoint_every is not None and state.step % checkpoint_every == 0
            if checkpoint_path is not None and (due or interrupted or state.step == steps):
                _save_checkpoint(checkpoint_path, parts, state, batches, rank)
            if interrupted:
                break
    if interrupted and rank == 0:
        where = f"; checkpoint saved to {checkpoint_path}" if checkpoint_path else ""
        print(f"Interrupted after step {state.step}{where}. Run train(...) again to resume.")
    return TrainResult(state.history, state.step, interrupted, checkpoint_path, state.seconds)


def cpu_supports_bfloat16() -> bool:
    """True when this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def mixed_precision_dtype(device: torch.device) -> torch.dtype:
    """The autocast type for ``amp=True`` on ``device``, or a ValueError saying why not."""
    if device.type == "cuda":
        # bfloat16 where the GPU has it; float16 gradients underflow without loss scaling,
        # so that case gets a gradient scaler
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bfloat16():
        return torch.bfloat16
    raise ValueError(f"mixed precision (amp=True) is only used on CUDA and on CPUs with "
                     f"native bfloat16 (AVX512-BF16/AMX), not on {device}; use amp=False")


@dataclass
class _RunState:
    """Counters that a checkpoint must carry besides the modules."""

    step: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)
    sums: dict = field(default_factory=dict)  # values summed since the last history row
    count: int = 0

    def accumulate(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def log_row(self, epoch: int, lr: float) -> dict[str, float]:
        row = {"step": self.step, "epoch": epoch, "lr": lr, "seconds": round(self.seconds, 3)}
        row.update({name: total / self.count for name, total in self.sums.items()})
        self.history.append(row)
        self.sums, self.count = {}, 0
        return row


class _BatchStream:
    """Endless batches from a loader, able to return to a saved position inside an epoch.

    The data order and augmentations of an epoch are fixed by the random generators at the
    moment the epoch starts, so saving those states plus the number of batches already drawn
    lets :meth:`restore` replay the epoch up to that point.
    """

    def __init__(self, loader):
        self.loader = loader
        self.epoch = 0
        self.position = 0
        self._iterator = None
        self._epoch_start_rng = None

    def next(self):
        if self._iterator is None:
            self._start_epoch()
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.epoch += 1
            self._start_epoch()
            try:
                batch = next(self._iterator)
            except StopIteration:
                raise ValueError("the loader yields no batch (is the dataset empty, or "
                                 "smaller than the batch size with drop_last=True?)") from None
        self.position += 1
        return batch

    def _start_epoch(self) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        generator = getattr(self.loader, "generator", None)
        self._epoch_start_rng = {
            "torch": torch.get_rng_state(),
            "loader": generator.get_state() if generator is not None else None,
        }
        self._iterator = iter(self.loader)
        self.position = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "rng": self._epoch_start_rng}

    def restore(self, saved: dict) -> None:
        """Replay the saved epoch up to the saved position (this draws random numbers, so the
        caller restores the generators' checkpoint states afterwards)."""
        self.epoch = saved["epoch"]
        if saved["rng"] is None:  # saved before the first batch
            return
        torch.set_rng_state(saved["rng"]["torch"])
        generator = getattr(self.loader, "generator", None)
        if generator is not None and saved["rng"]["loader"] is not None:
            generator.set_state(saved["rng"]["loader"])
        self._start_epoch()
        for _ in range(saved["position"]):
            next(self._iterator)
        self.position = saved["position"]


class _CsvLog:
    """The history as a CSV file, rewritten from the checkpoint's history on resume so rows
    that a killed run wrote after its last checkpoint disappear."""

    def __init__(self, path, history: list[dict]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fields = list(history[0]) if history else None
        with open(self.path, "w", newline="") as stream:
            if history:
                writer = csv.DictWriter(stream, self._fields)
                writer.writeheader()
                writer.writerows(history)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as stream:
            if self._fields is None:
                self._fields = list(row)
                csv.DictWriter(stream, self._fields).writeheader()
            csv.DictWriter(stream, self._fields).writerow(row)


class _CtrlC:
    """Turns the first Ctrl-C into a request to stop after the current step (so the checkpoint
    is consistent); a second Ctrl-C interrupts at once. Only the main thread gets signals."""

    def __enter__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any process, so that all ranks stop at the same step."""
    if not _distributed():
        return flag
    tensor = torch.tensor([float(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def _check_disjoint(optimizer, aux_optimizer) -> None:
    if aux_optimizer is None:
        return
    main = {id(p) for group in optimizer.param_groups for p in group["params"]}
    aux = {id(p) for group in aux_optimizer.param_groups for p in group["params"]}
    if main & aux:
        raise ValueError(
            f"{len(main & aux)} parameter(s) are in both optimizer and aux_optimizer; give the "
            "aux optimiser only the auxiliary parameters (e.g. the entropy model's quantiles)"
        )


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch


def _as_floats(losses) -> dict[str, float]:
    if not isinstance(losses, dict) or "loss" not in losses:
        raise ValueError(
            "loss_fn must return a dict with a 'loss' entry, e.g. {'loss': mse, 'psnr': psnr}; "
            f"got {type(losses).__name__}"
            + (f" with keys {sorted(losses)}" if isinstance(losses, dict) else "")
        )
    names = list(losses)
    device = torch.as_tensor(losses["loss"]).device
    # One device-to-host copy for all values instead of one per value.
    stacked = torch.stack(
        [torch.as_tensor(losses[name], device=device).detach().float() for name in names])
    return dict(zip(names, stacked.cpu().tolist(), strict=True))


def _nan_message(step: int, values: dict[str, float], checkpoint_path) -> str:
    shown = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
    resume = (
        f" The last checkpoint is {checkpoint_path}; run again after the change to resume."
        if checkpoint_path is not None and Path(checkpoint_path).is_file() else ""
    )
    return (
        f"Training stopped at step {step}: the loss is not finite ({shown}), so the model was "
        "not updated with it. Usual causes: a learning rate too high (try 10x lower), "
        "exploding gradients (pass clip_grad_norm=1.0), or NaN/inf in the input batch."
        + resume
    )


def _rng_states() -> dict:
    # NumPy's state is kept as a tensor so the checkpoint loads with weights_only=True.
    name, keys, position, has_gauss, cached_gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss,
                  cached_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss,
                         cached_gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _save_checkpoint(path: Path, parts: dict, state: _RunState, batches: _BatchStream,
                     rank: int) -> None:
    if rank == 0:
        checkpoint = {
            name: (unwrap(part) if name == "model" else part).state_dict()
            for name, part in parts.items() if part is not None
        }
        checkpoint.update(
            step=state.step, seconds=state.seconds, history=state.history,
            sums=state.sums, count=state.count, batches=batches.state_dict(),
            rng=_rng_states(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        torch.save(checkpoint, partial)
        os.replace(partial, path)  # a kill during the save never leaves a broken checkpoint
    if _distributed():
        dist.barrier()


def _load_checkpoint(path: Path, parts: dict, state: _RunState, batches: _BatchStream,
                     rank: int) -> None:
    # Loaded on the CPU: generator states must live there, and load_state_dict moves the
    # rest to where the model and optimisers already are.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for name, part in parts.items():
        if part is not None and name in checkpoint:
            part.load_state_dict(checkpoint[name])
    state.step, state.seconds = checkpoint["step"], checkpoint["seconds"]
    state.history, state.sums, state.count = (
        checkpoint["history"], checkpoint["sums"], checkpoint["count"])
    batches.restore(checkpoint["batches"])
    _set_rng_states(checkpoint["rng"])
    if rank != 0:
        # The checkpoint holds rank 0's generators; other ranks need streams of their own.
        seed_everything(1_000_003 * rank + state.step)


def time_budget(minutes: float | None) -> Callable[[int, dict[str, float]], bool] | None:
    """A :func:`train` callback that stops the run after ``minutes`` of wall time from now
    (with a checkpoint, so that running again continues); ``None`` for no budget."""
    if minutes is None:
        return None
    if minutes <= 0:
        raise ValueError(f"the time budget must be positive, got {minutes} minutes")
    deadline = time.perf_counter() + 60 * minutes
    return lambda step, values: time.perf_counter() >= deadline


def parameter_count(model: nn.Module) -> int:
    """The number of trainable numbers in ``model`` (its parameters that need gradients)."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
