"""One trial's training loop, run by every DDP rank (Ray Train worker) or in-process.

Per step: forward, backward, SGD; on the probe's schedule the probe records every layer
(docs/metrics.md).  Host syncs: one per recorded step (the probe), one per metrics group
of GROUP steps (loss/accuracy sums and the divergence flag, all ranks in one all_reduce),
and the end-of-epoch evaluation.  Per epoch rank 0 writes the epoch's layer_stats and
train_metrics Parquet files (named by the epoch's first step), then every rank calls
``report`` once (with rank 0's checkpoint): the same number of calls on every rank.
A non-finite loss or gradient marks the trial diverged: its rows are kept, it stops at
the end of that group on every rank, and it ends cleanly.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from .batches import Batches
from .models import build_model
from .probe import M, Probe, record_steps
from .runs import hardware
from .schema import layer_stats_table, train_metrics_table
from .spec import TrialSpec
from .store import Store

GROUP = 10  # steps per train_metrics row: one host sync per group
# Fault injection for the restart tests: "<trial_id>:<epoch>[,...]" makes attempt 0 of that
# trial raise after finishing (and checkpointing) that epoch; later attempts run on.
CRASH_ENV = "VGRAD_TEST_CRASH_AFTER_EPOCH"


def lr_factor(schedule: str, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the base lr at a step: constant, step (x0.1 at 50% and 75%), cosine."""
    if schedule == "constant":
        return lambda s: 1.0
    if schedule == "step":
        return lambda s: 0.1 ** ((s >= total_steps // 2) + (s >= (3 * total_steps) // 4))
    if schedule == "cosine":
        return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / max(total_steps, 1)))
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid choices: constant, step, cosine")


def _all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


class Trial:
    """State of one trial on one rank."""

    def __init__(self, trial: TrialSpec, *, store: Store, sweep_id: str, device, rank=0, world=1,
                 wrap: Callable[[nn.Module], nn.Module] | None = None, loader_workers: int = 2):
        self.spec, self.store, self.sweep_id = trial, store, sweep_id
        self.rank, self.world, self.device = rank, world, torch.device(device)
        self.dtype = getattr(torch, trial.dtype)
        torch.manual_seed(trial.seed)  # nothing here draws from it; set for user extensions
        self.net = build_model(trial.model, seed=trial.seed).to(device=self.device, dtype=self.dtype)
        self.probe = Probe(self.net, trial.model.activation, record_act=trial.probe.probe_act, world_size=world)
        self.model = wrap(self.net) if wrap else self.net
        tr = trial.training
        self.opt = torch.optim.SGD(self.net.parameters(), lr=tr.lr, momentum=tr.momentum, weight_decay=tr.weight_decay)
        self.data = Batches(trial, device=self.device, dtype=self.dtype, rank=rank, world=world,
                            loader_workers=loader_workers)
        self.total = self.data.steps_per_epoch * tr.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor(tr.lr_schedule, self.total))
        self.record = set(record_steps(self.total, trial.probe.probe_every, trial.probe.probe_log_points))
        self.start_epoch, self.attempt, self.diverged = 0, 0, False
        self.last = {}

    # -- checkpoints -----------------------------------------------------------------------
    def state(self, epoch: int) -> dict:
        return {"model": self.net.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "epoch": epoch, "attempt": self.attempt, "diverged": self.diverged, "rng": torch.get_rng_state(),
                "last": self.last}

    def restore(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"].cpu())  # map_location put it on the device
        self.start_epoch, self.attempt = state["epoch"] + 1, state["attempt"] + 1
        self.diverged, self.last = state["diverged"], state["last"]

    # -- the loop -------------------------------------------------------------------------
    def run(self, report: Callable[[dict, dict | None], None] | None = None) -> dict:
        tr = self.spec.training
        self.ranks = self._gather_ranks()
        previous = [self._previous_attempts() if self.rank == 0 else 0]
        if self.world > 1:  # every rank must agree on the attempt (the crash injection reads it)
            dist.broadcast_object_list(previous, 0)
        self.attempt = max(self.attempt, previous[0])
        if self.rank == 0:
            self._write_manifest("running")
        if report is not None and (self.start_epoch >= tr.epochs or self.diverged):
            report(self.last, None)  # restored a finished trial: nothing to run, tell Tune its result
        for epoch in range(self.start_epoch, tr.epochs):
            if self.diverged:
                break
            rows, records, rec_meta = self._epoch(epoch)
            rows.append(self._evaluate(epoch))
            first = epoch * self.data.steps_per_epoch
            losses = []
            if records:  # the same recorded steps on every rank: one all_reduce for their global losses
                local = torch.stack([m[1] for m in rec_meta]).double()
                losses = (_all_reduce(local, self.world) / self.world).cpu().tolist()
            if self.rank == 0:
                self._flush(first, rows, records, rec_meta, losses)
            self.last = {"epoch": epoch, "step": first + self.data.steps_per_epoch, "diverged": self.diverged,
                         "train_loss": rows[-2]["loss"] if len(rows) > 1 else float("nan"),
                         "test_loss": rows[-1]["loss"], "test_accuracy": rows[-1]["accuracy"], "attempt": self.attempt}
            if report is not None:
                report(self.last, self.state(epoch) if self.rank == 0 else None)
            if f"{self.spec.trial_id}:{epoch}" in os.environ.get(CRASH_ENV, "").split(",") and self.attempt == 0:
                raise RuntimeError(f"{CRASH_ENV}: injected failure after epoch {epoch}")
        status = "diverged" if self.diverged else "completed"
        if self.rank == 0:
            self._write_manifest(status)
        return {"trial_id": self.spec.trial_id, "status": status, **self.last}

    def _previous_attempts(self) -> int:
        """Attempts an earlier run of this trial recorded (0 if none): a restart that found
        no checkpoint still counts as a new attempt, so its rows win the dedupe."""
        try:
            return int(self.store.read_json(Store.trial_json(self.sweep_id, self.spec.trial_id))["attempts"])
        except (FileNotFoundError, KeyError, ValueError):
            return 0

    def _gather_ranks(self) -> list[dict]:
        """Who took part (host, pid, device of every rank): the manifest's evidence of DDP."""
        me = {"rank": self.rank, "host": os.uname().nodename, "pid": os.getpid(), "device": str(self.device)}
        if self.world == 1:
            return [me]
        out = [None] * self.world
        dist.all_gather_object(out, me)
        return out

    def _epoch(self, epoch: int):
        spe, B = self.data.steps_per_epoch, self.spec.data.batch_size
        rows, records, rec_meta = [], [], []
        acc = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, nonfinite steps
        t0, n0 = time.perf_counter(), 0
        self.model.train()
        for k, x, y in self.data.epoch(epoch):
            step = epoch * spe + k
            recording = step in self.record
            if recording:
                self.probe.start()
            out = self.model(x)
            loss = nn.functional.cross_entropy(out, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if recording:
                records.append(self.probe.finish(step))  # one host sync
                rec_meta.append((epoch, loss.detach(), self.sched.get_last_lr()[0]))
                if records[-1].moments[..., M["n_nonfinite"]].sum() > 0:
                    self.diverged = True  # identical on all ranks: the probe combined them
            ld = loss.detach()
            acc += torch.stack([ld.double() * len(y), (out.argmax(1) == y).sum().double(),
                                (~torch.isfinite(ld)).double()])
            lr = self.sched.get_last_lr()[0]
            self.opt.step()
            self.sched.step()
            if (k + 1) % GROUP == 0 or k + 1 == spe:
                tot = _all_reduce(acc.clone(), self.world).cpu()  # the group's one host sync
                n, dt = k + 1 - n0, time.perf_counter() - t0
                rows.append({"epoch": epoch, "step": step, "split": "train", "loss": tot[0].item() / (n * B),
                             "accuracy": tot[1].item() / (n * B), "lr": lr, "images_per_s": n * B / dt,
                             "step_time_s": dt / n, "steps": n})
                self.diverged |= bool(tot[2] > 0)
                acc.zero_()
                t0, n0 = time.perf_counter(), k + 1
                if self.diverged:
                    break
        return rows, records, rec_meta

    @torch.no_grad()
    def _evaluate(self, epoch: int) -> dict:
        if self.world > 1:  # batch-norm running stats drift per rank: evaluate rank 0's model, as checkpointed
            for b in self.net.buffers():
                dist.broadcast(b, 0)
        self.model.eval()
        tot = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss sum, correct
        count, t0 = 0, time.perf_counter()
        for x, y in self.data.test_batches():
            out = self.net(x)  # no DDP wrapper: no gradient sync needed
            tot += torch.stack([nn.functional.cross_entropy(out, y, reduction="sum").double(),
                                (out.argmax(1) == y).sum().double()])
            count += len(y)
        tot = _all_reduce(torch.cat([tot, tot.new_tensor([count])]), self.world).cpu()
        n = max(tot[2].item(), 1.0)
        dt = time.perf_counter() - t0
        return {"epoch": epoch, "step": (epoch + 1) * self.data.steps_per_epoch, "split": "test",
                "loss": tot[0].item() / n, "accuracy": tot[1].item() / n, "lr": self.sched.get_last_lr()[0],
                "images_per_s": n / dt, "step_time_s": dt, "steps": 0}

    def _flush(self, first_step: int, rows: list[dict], records, rec_meta, losses: list[float]) -> None:
        """Rank 0: this epoch's Parquet, whole files named by the epoch's first step."""
        sid, tid = self.sweep_id, self.spec.trial_id
        if records:
            table = layer_stats_table(sweep_id=sid, trial=self.spec, attempt=self.attempt, layers=self.net.layers,
                                      records=records, epochs=[m[0] for m in rec_meta], losses=losses,
                                      lrs=[m[2] for m in rec_meta], record_act=self.spec.probe.probe_act)
            self.store.write_table(Store.part_name("layer_stats", sid, tid, first_step), table)
        table = train_metrics_table(sweep_id=sid, trial=self.spec, attempt=self.attempt, rows=rows)
        self.store.write_table(Store.part_name("train_metrics", sid, tid, first_step), table)

    def _write_manifest(self, status: str) -> None:
        self.store.write_json(Store.trial_json(self.sweep_id, self.spec.trial_id), {
            "trial_id": self.spec.trial_id, "sweep_id": self.sweep_id, "kind": "train", "spec": self.spec.to_dict(),
            "status": status, "attempts": self.attempt + 1, "world_size": self.world, "ranks": self.ranks,
            "hardware": hardware(self.device), "last": self.last})


def save_state(state: dict) -> str:
    d = tempfile.mkdtemp(prefix="vgrad-ckpt-")
    torch.save(state, os.path.join(d, "state.pt"))
    return d


def load_state(directory: str, device) -> dict:
    return torch.load(os.path.join(directory, "state.pt"), map_location=device, weights_only=False)
