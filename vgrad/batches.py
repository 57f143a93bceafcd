"""Batches for a training worker: the same global batches whatever the number of DDP ranks.

Epoch e's order is a permutation drawn from (seed, e); global batch k is its slice
[k*B, (k+1)*B) (the incomplete last batch is dropped), and rank r of W takes the r-th
contiguous B/W of it.  A 1-worker and a 2-worker trial therefore see the same images
in the same global batches; augmentation draws per image from (seed, epoch, step), so
it does not depend on W either.

Where the data come from:
  resident   CIFAR-sized data (synthetic at 32px, cifar10) live on the device as one
             tensor; crop-with-padding and flips run on the device (as the fast CIFAR
             trainers do), so no DataLoader workers are needed on few CPUs
  synthetic  ImageNet-sized synthetic images, made per batch on the host
  folder     torchvision ImageFolder through a DataLoader fed with the same index lists;
             its random crops and flips are torchvision's, drawn in the loader workers, so
             they are not reproducible across runs or world sizes (the images per batch are)
"""
from __future__ import annotations

import torch

from .data import SyntheticImages, synthetic_for
from .loaders import CIFAR_MEAN, CIFAR_STD, image_folder, load_cifar10

PAD = 4  # He et al. 2016: 4-pixel padding, random 32x32 crop, horizontal flip
EVAL_BATCH = 256


def _gen(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class Batches:
    def __init__(self, trial, *, device, dtype, rank: int = 0, world: int = 1, loader_workers: int = 2):
        if trial.data.batch_size % world:
            raise ValueError(f"batch_size {trial.data.batch_size} is not divisible by {world} workers")
        self.trial, self.device, self.dtype, self.rank, self.world = trial, device, dtype, rank, world
        self.B, self.local = trial.data.batch_size, trial.data.batch_size // world
        self.seed, self.augment = trial.seed, trial.data.augment
        self.loader_workers = loader_workers
        self._planned = None
        ds, res = trial.data.dataset, trial.data.resolution
        if ds == "cifar10" or (ds == "synthetic" and res <= 64):
            self.kind = "resident"
            self.train, self.test = (self._resident(s) for s in ("train", "test"))
        elif ds == "synthetic":
            self.kind = "synthetic"
            self.train, self.test = synthetic_for(trial, "train"), synthetic_for(trial, "test")
        else:
            self.kind = "folder"
            self.train = image_folder(trial.data.data_root, "train", res, train=self.augment)
            self.test = image_folder(trial.data.data_root, "val", res, train=False)
        self.n_train = len(self.train[1]) if self.kind == "resident" else len(self.train)
        self.n_test = len(self.test[1]) if self.kind == "resident" else len(self.test)
        if self.n_train < self.B:
            raise ValueError(f"{self.n_train} training images are fewer than one batch of {self.B}")

    def _resident(self, split: str):
        t = self.trial
        if t.data.dataset == "cifar10":
            x, y = load_cifar10(t.data.data_root)[split]
            mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1) * 255
            std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1) * 255
            x = (torch.from_numpy(x).float() - mean) / std
            y = torch.from_numpy(y)
        else:
            data: SyntheticImages = synthetic_for(t, split)
            x, y = data.batch(range(len(data)))
        # Held on the device in the compute dtype: one copy, no per-step host->device traffic.
        return x.to(self.device, self.dtype), y.to(self.device)

    @property
    def steps_per_epoch(self) -> int:
        full = self.n_train // self.B
        cap = self.trial.training.steps_per_epoch
        return min(full, cap) if cap else full

    def _plan(self, epoch: int) -> dict:
        """The epoch's index lists and augmentation draws for this rank, made once per epoch
        on the host and copied to the device once: no host<->device traffic per step."""
        if self._planned is not None and self._planned["epoch"] == epoch:
            return self._planned
        steps, sl = self.steps_per_epoch, slice(self.rank * self.local, (self.rank + 1) * self.local)
        perm = torch.randperm(self.n_train, generator=_gen(self.seed, 1, epoch))
        idx = perm[: steps * self.B].view(steps, self.B)[:, sl].contiguous()
        plan = {"epoch": epoch, "idx": idx}
        if self.kind == "resident":
            aug = []
            for k in range(steps):  # per-step generators: the same draws for any world size
                g = _gen(self.seed, 2, epoch, k)
                draws = torch.randint(0, 2 * PAD + 1, (self.B, 2), generator=g)
                flips = (torch.rand(self.B, generator=g) < 0.5).long()
                aug.append(torch.cat([draws, flips[:, None]], 1)[sl])
            plan["idx_dev"] = idx.to(self.device)
            plan["aug_dev"] = torch.stack(aug).to(self.device)  # (steps, local, [oy, ox, flip])
        self._planned = plan
        return plan

    def _local_indices(self, epoch: int, step: int) -> torch.Tensor:
        return self._plan(epoch)["idx"][step]

    def epoch(self, epoch: int):
        """Yields (step, x, y): this rank's share of every global batch of ``epoch``, on the device."""
        if self.kind == "folder":  # decode JPEGs in DataLoader workers, same index lists
            from torch.utils.data import DataLoader

            lists = [self._local_indices(epoch, k).tolist() for k in range(self.steps_per_epoch)]
            loader = DataLoader(self.train, batch_sampler=lists, num_workers=self.loader_workers,
                                pin_memory=torch.device(self.device).type == "cuda")
            for step, (x, y) in enumerate(loader):
                yield step, x.to(self.device, self.dtype, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        for step in range(self.steps_per_epoch):
            yield (step, *self.train_batch(epoch, step))

    def train_batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank's share of global batch ``step`` of ``epoch``, on the device (resident/synthetic)."""
        plan = self._plan(epoch)
        if self.kind == "resident":
            idx = plan["idx_dev"][step]
            x, y = self.train[0][idx], self.train[1][idx]
            return (self._augment(x, plan["aug_dev"][step]) if self.augment else x), y
        x, y = self.train.batch(plan["idx"][step].tolist(), dtype=self.dtype)
        return x.to(self.device, self.dtype, non_blocking=True), y.to(self.device, non_blocking=True)

    @staticmethod
    def _augment(x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """Random crop (zero padding PAD) and horizontal flip, per image, on the device;
        ``draws`` (local, 3) holds each image's row offset, column offset and flip."""
        oy, ox, flip = draws[:, 0], draws[:, 1], draws[:, 2].bool()
        n, _, h, w = x.shape
        xp = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        out = xp[batch, chan, rows, cols]
        return torch.where(flip[:, None, None, None], out.flip(3), out)

    def test_batches(self):
        """This rank's share of the held-out set (indices rank, rank + W, ...), in batches."""
        idx = torch.arange(self.rank, self.n_test, self.world)
        size = max(self.local, EVAL_BATCH)  # eval mode: batch size does not change the numbers
        for start in range(0, len(idx), size):
            part = idx[start:start + size]
            if self.kind == "resident":
                d = part.to(self.device)
                yield self.test[0][d], self.test[1][d]
            else:
                x, y = (self.test.batch(part.tolist(), dtype=self.dtype) if self.kind == "synthetic"
                        else _stack([self.test[i] for i in part.tolist()]))
                yield x.to(self.device, self.dtype), y.to(self.device)


def _stack(items):
    return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])
