"""The chapters' recipes: how the course's models are trained, shipped and measured.

The library (everything outside this package) holds the course's concepts; a recipe puts them
together for one chapter, and nothing in the library imports a recipe.

- :mod:`.autoencoders`: notebooks 03-04, the shipped autoencoders and their training;
- :mod:`.rate_distortion`: notebook 06, small factorized priors, their training and the
  measurements the notebook prints;
- :mod:`.codec_training`: notebook 07 and ``python -m course_lib train`` / ``export``, the
  learned codec's training.

Every recipe trains through :func:`train_on_patches`, which sets up the data and optimisers and
hands them to the course's one training loop, :func:`course_lib.train.train`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .. import datasets
from ..models import split_parameters
from ..train import TrainResult, train


def train_on_patches(model: nn.Module, loss_fn, steps: int, *, patch_size: int,
                     batch_size: int, lr: float, milestones: Sequence[float] = (0.8,),
                     gamma: float = 0.1, aux_lr: float | None = None,
                     num_images: int | None = None, downscale: tuple | None = None,
                     workers: int = 0, distributed: bool = False, seed: int = 0,
                     **train_kwargs) -> TrainResult:
    """Train ``model`` in place on random crops of the course training set: the one recipe.

    Random ``patch_size`` crops of the training images (the first ``num_images`` only, if
    given; ``downscale`` as in :class:`course_lib.datasets.PatchDataset`), shuffled with
    ``seed``, ``batch_size`` per step (and per process when ``distributed``: each then reads
    its own share), ``workers`` loader processes. Adam at ``lr``, multiplied by ``gamma`` at
    each fraction of ``steps`` in ``milestones``. With ``aux_lr``, the entropy bottleneck's
    quantiles (:func:`course_lib.models.split_parameters`) get an Adam of their own at that
    rate and ``loss_fn`` must return their ``"aux_loss"``. The rest (``device``, ``amp``,
    ``clip_grad_norm``, ``checkpoint_path``, ``log_csv``, ``progress``, ``callback`` …) goes
    to :func:`course_lib.train.train`, which runs the steps.
    """
    paths = datasets.training_paths()[:num_images]
    dataset = datasets.PatchDataset(paths, patch_size, train=True, downscale=downscale)
    sampler = DistributedSampler(dataset, seed=seed) if distributed else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None,
                        sampler=sampler, num_workers=workers,
                        drop_last=len(paths) >= batch_size,
                        generator=torch.Generator().manual_seed(seed),
                        persistent_workers=workers > 0)
    aux_optimizer = None
    if aux_lr is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        main, quantiles = split_parameters(model)
        optimizer = torch.optim.Adam(main, lr=lr)
        aux_optimizer = torch.optim.Adam(quantiles, lr=aux_lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [max(1, int(steps * fraction)) for fraction in milestones], gamma=gamma)
    return train(model, loader, loss_fn, optimizer, steps=steps, aux_optimizer=aux_optimizer,
                 scheduler=scheduler, seed=seed, **train_kwargs)
