"""Train the small models that notebook 06 loads, and write their checksums.

    COURSE_DATA_MIRROR=... python weights/notebook06/train.py            # all three
    python weights/notebook06/train.py ste --steps 100 --out /tmp/try    # a quick try

Every model is a factorized prior with N=64, M=96 trained by
``course_lib.recipes.rate_distortion.train_rd`` (the recipe the notebook's live run uses)
from the same seed, at the same λ, for the same number of steps on 64 x 64 patches of the
course training set. They differ in one thing each:

* ``noise``: GDN, the decoder sees ``y`` + uniform noise in training (Ballé et al.);
* ``ste``:   GDN, the decoder sees rounded ``y`` with a straight-through gradient;
* ``relu``:  as ``ste`` with ReLU in place of GDN / IGDN.

Outputs in ``--out``: ``<name>.pt`` (float16 parameters and the integer CDF tables) and
``logs/<name>.csv`` (the trainer's log); when ``--out`` is this folder, their sha256 go to
``course_lib/manifests/weights.txt`` (:func:`course_lib.weights.record`). The run's console
output is kept as ``train.log``
(``python weights/notebook06/train.py > weights/notebook06/train.log``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from course_lib import weights
from course_lib.codecs import learned
from course_lib.recipes import rate_distortion as rd

MODELS = {"noise": ("gdn", "noise"), "ste": ("gdn", "ste"), "relu": ("relu", "ste")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*",
                        help=f"models to train (default: all of {list(MODELS)})")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (one is fastest on a shared machine)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(MODELS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {list(MODELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.names or list(MODELS):
        activation, quantization = MODELS[name]
        torch.manual_seed(0)
        model = rd.factorized_prior(rd.SMALL_N, rd.SMALL_M, activation)
        start = time.perf_counter()
        result = rd.train_rd(model, args.steps, rd.LAMBDA,
                                   decoder_quantization=quantization, log_every=50,
                                   log_csv=args.out / "logs" / f"{name}.csv")
        last = result.history[-1]
        print(f"{name}: {result.step} steps in {time.perf_counter() - start:.0f} s; mean of "
              f"the last 50 steps: loss {last['loss']:.4f}, bpp {last['bpp']:.4f}, "
              f"PSNR {last['psnr']:.2f} dB", flush=True)
        config = {"n": rd.SMALL_N, "m": rd.SMALL_M, "activation": activation,
                  "decoder_quantization": quantization, "lmbda": rd.LAMBDA,
                  "steps": result.step, "patch_size": 64, "batch_size": 8, "seed": 0}
        learned.save_weights(model, config, args.out / f"{name}.pt")
        weights.record([args.out / f"{name}.pt", args.out / "logs" / f"{name}.csv"])


if __name__ == "__main__":
    main()
