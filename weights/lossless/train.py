"""Train the learned lossless coder's model (course_lib.codecs.lossless_learned).

    python weights/lossless/train.py [--steps N] [--run-dir runs/lossless] [--export]
    python weights/lossless/train.py --init weights/lossless/polyphase.pt --lr 6e-4 \
        --steps 8000 --minutes 100 --run-dir runs/lossless-2   # model 1, from model 0

Random 128 x 128 crops of the course training set's PNG images (CID22's training split: a
lossless coder must not learn from BSDS500's JPEG files, whose pixels carry JPEG's smoothing
and blocks), random flips, batches of 8, Adam 2e-3 (``--lr``; x0.3 at 70 % and 90 % of the
steps), gradients clipped to norm 1, one CPU thread; the loss is the estimated bits per subpixel of
two polyphase levels (``training_loss``). Checkpoints every 100 steps in --run-dir
(resumable: run the same command again; Ctrl-C saves one, and --export then writes the
model from it).
At the end the model is written to weights/lossless/polyphase.pt and the log to
weights/lossless/logs/polyphase.csv.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from course_lib import datasets
from course_lib.codecs import lossless_learned
from course_lib.train import seed_everything, time_budget, train

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/lossless"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's first learning rate")
    parser.add_argument("--init", type=Path,
                        help="start a fresh run from these weights (a file of save_model)")
    parser.add_argument("--minutes", type=float,
                        help="stop (with a checkpoint) after this wall time; run again to go on")
    parser.add_argument("--export", action="store_true",
                        help="only write --out from the run's checkpoint (a stopped run)")
    parser.add_argument("--out", type=Path, default=HERE / "polyphase.pt")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seed_everything(0)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    paths = [path for path in datasets.training_paths() if path.suffix.lower() == ".png"]
    data = datasets.PatchDataset(paths, args.patch_size, train=True, patches_per_image=8)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch_size, shuffle=True,
                                         num_workers=0, drop_last=True)
    if args.init is not None:
        model = lossless_learned.load_model(args.init).float()
        print(f"starting from {args.init}")
    else:
        model = lossless_learned.PolyphaseModel(args.channels)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [int(0.7 * args.steps), int(0.9 * args.steps)], gamma=0.3)
    if args.export:
        checkpoint = torch.load(args.run_dir / "checkpoint.pt", weights_only=True)
        model.load_state_dict(checkpoint["model"])
        print(f"checkpoint of step {checkpoint['step']}")
        export(model, args)
        return
    started = time.perf_counter()
    result = train(model, loader, lambda m, batch: lossless_learned.training_loss(m, batch),
                   optimizer, steps=args.steps, scheduler=scheduler, device="cpu",
                   clip_grad_norm=1.0, checkpoint_path=args.run_dir / "checkpoint.pt",
                   checkpoint_every=100, log_csv=args.run_dir / "log.csv", log_every=20,
                   resume=True, callback=time_budget(args.minutes))
    print(f"{result.step} steps, {time.perf_counter() - started:.0f} s this run")
    if result.step >= args.steps:
        export(model, args)


def export(model, args) -> None:
    lossless_learned.save_model(model, args.out)
    logs = args.out.parent / "logs"
    logs.mkdir(exist_ok=True)
    shutil.copy(args.run_dir / "log.csv", logs / f"{args.out.stem}.csv")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
