"""`vgrad sweep`: one Ray Tune trial per TrialSpec, each a Ray Train TorchTrainer (DDP).

Ray Train V2 does not accept a Trainer inside a Tuner, so each Tune trial is a small
function (0 CPUs: it only waits) that builds a TorchTrainer named by the trial_id and
calls fit(); TuneReportCallback carries the epoch metrics back to Tune.  Our Parquet is
the record; Tune sees a few scalars per epoch.  Ray's own files (Tune state, Train
checkpoints) live under <root>/<sweep_id>/ray, ours beside them (docs/schema.md).
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass

from .grid import SweepSpec
from .runs import start_ray, sweep_id as make_sweep_id, trial_label, write_sweep_manifest
from .spec import TrialSpec
from .store import Store, StorageOptions, StoreError


@dataclass(frozen=True)
class Resources:
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2

    def __post_init__(self):
        problems = []
        if self.workers_per_trial < 1:
            problems.append(f"--workers-per-trial must be >= 1, got {self.workers_per_trial}")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0:
            problems.append("--cpus-per-worker and --gpus-per-worker must be >= 0")
        if 0 < self.gpus_per_worker < 1 and self.workers_per_trial > 1:
            problems.append("fractional --gpus-per-worker packs 1-worker trials only (NCCL needs a GPU per rank)")
        if problems:
            raise ValueError("; ".join(problems))


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: one DDP rank of one trial."""
    import ray.train
    import ray.train.torch
    import torch

    from .train import Trial, load_state, save_state

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    device = ray.train.torch.get_device()
    trial = Trial(TrialSpec.from_json(config["trial"]), store=config["store"], sweep_id=config["sweep_id"],
                  device=device, rank=rank, world=world,
                  wrap=lambda m: ray.train.torch.prepare_model(m, move_to_device=False),
                  loader_workers=max(0, int(config["cpus_per_worker"]) - 1))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart: resume after the last finished epoch, attempt + 1
        with checkpoint.as_directory() as d:
            trial.restore(load_state(d, device))

    def report(metrics: dict, state: dict | None) -> None:
        if state is None:
            ray.train.report(metrics)
            return
        d = save_state(state)
        try:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        finally:
            shutil.rmtree(d, ignore_errors=True)

    trial.run(report)


def ray_storage(store: Store, sweep_id: str):
    """(storage_path, storage_filesystem) for Ray: the same bucket/endpoint as our files."""
    if store.scheme == "file":
        import os

        return os.path.abspath(f"{store.root}/{sweep_id}/ray"), None
    import pyarrow.fs

    return f"{store.root}/{sweep_id}/ray", pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(store.fs))


def tune_trial(config: dict, *, store: Store, sweep_id: str, resources: dict) -> None:
    """One Tune trial: build the trial's TorchTrainer and fit it.  ``store`` comes through
    tune.with_parameters (Ray's object store), so no credential lands in Tune's state."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    res = Resources(**resources)
    trial = TrialSpec.from_json(config["trial"])
    path, fs = ray_storage(store, sweep_id)
    per_worker = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        per_worker["GPU"] = res.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"trial": config["trial"], "store": store, "sweep_id": sweep_id,
                           "cpus_per_worker": res.cpus_per_worker},
        scaling_config=ScalingConfig(num_workers=res.workers_per_trial, use_gpu=res.gpus_per_worker > 0,
                                     resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if res.gpus_per_worker > 0 else "gloo"),
        run_config=RunConfig(name=trial.trial_id, storage_path=f"{path}/train", storage_filesystem=fs,
                             failure_config=FailureConfig(max_failures=res.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             callbacks=[TuneReportCallback()]),
    )
    try:
        trainer.fit()
    except Exception as e:  # retries used up: say so in the trial's manifest, then let Tune see it
        rel = Store.trial_json(sweep_id, trial.trial_id)
        try:
            manifest = store.read_json(rel)
        except FileNotFoundError:
            manifest = {"trial_id": trial.trial_id, "sweep_id": sweep_id, "spec": trial.to_dict()}
        store.write_json(rel, manifest | {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000]})
        raise


AUTOSCALE_CONCURRENCY = 16  # when the cluster fits no trial yet (GPU nodes not up): let it scale


def default_concurrency(res: Resources, echo=print) -> int:
    """Trials the cluster's resources fit now; on an autoscaling cluster whose GPU nodes
    are not up yet (fits none), a fixed number whose pending workers make it scale."""
    import ray

    total = ray.cluster_resources()
    fits = total.get("CPU", 0) / max(res.workers_per_trial * res.cpus_per_worker, 1e-9)
    if res.gpus_per_worker:
        fits = min(fits, total.get("GPU", 0) / (res.workers_per_trial * res.gpus_per_worker))
    if fits < 1:
        echo(f"the cluster fits no trial now ({total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU): "
             f"running {AUTOSCALE_CONCURRENCY} at a time for the autoscaler; set --max-concurrent to choose")
        return AUTOSCALE_CONCURRENCY
    return math.floor(fits + 1e-9)


def sweep_id_for(grid: SweepSpec, trials: list[TrialSpec]) -> str:
    return make_sweep_id(grid, trials)


def _progress_callback(total: int, echo):
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self):
            self.done = 0

        def _line(self, trial, state: str):
            self.done += 1
            r = trial.last_result or {}
            status = "diverged" if r.get("diverged") else state
            echo(f"{trial_label(self.done, total, TrialSpec.from_json(trial.config['trial']))} {status:9s} "
                 f"test loss {r.get('test_loss', float('nan')):.4g} acc {r.get('test_accuracy', float('nan')):.3f}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._line(trial, "completed")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "FAILED")

    return Progress()


def run_sweep(grid: SweepSpec, *, storage: str, options: StorageOptions | None = None,
              resources: Resources = Resources(), max_concurrent: int | None = None, resume: bool = False,
              address: str | None = None, sweep_id: str | None = None, echo=print) -> dict:
    from ray import tune

    trials = grid.trials()
    store = Store(storage, options)
    if store.options.key or store.options.secret:
        raise StoreError("explicit S3 keys are not passed to a sweep: Ray would keep them in its saved state; "
                         "use the AWS credential chain (environment, ~/.aws, instance profile)")
    store.check()  # fail fast, before Ray starts
    sweep_id = sweep_id or sweep_id_for(grid, trials)
    if not resume and store.exists(f"{sweep_id}/ray"):
        raise StoreError(f"sweep {sweep_id} already exists at {store.url_of(sweep_id)}: pass --resume to "
                         "continue it (finished trials are kept) or --sweep-id to start another")
    start_ray(address)
    path, fs = ray_storage(store, sweep_id)
    concurrency = max_concurrent or default_concurrency(resources, echo)
    trainable = tune.with_resources(  # no CPU: it only waits on its trainer's workers
        tune.with_parameters(tune_trial, store=store, sweep_id=sweep_id, resources=asdict(resources)),
        {"CPU": 0, "memory": 2**20})  # a bundle cannot be empty: 1 MiB of memory
    tune_path = f"{path}/tune"
    if resume and tune.Tuner.can_restore(tune_path, storage_filesystem=fs):
        echo(f"sweep {grid.name}: resuming {sweep_id} (finished trials are kept)")
        tuner = tune.Tuner.restore(tune_path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    else:
        write_sweep_manifest(store, sweep_id, grid, trials, kind="sweep", resources=asdict(resources))
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.to_json() for t in trials])},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrency,
                                        trial_dirname_creator=lambda t: TrialSpec.from_json(t.config["trial"]).trial_id),
            run_config=tune.RunConfig(name="tune", storage_path=path, storage_filesystem=fs, verbose=0,
                                      callbacks=[_progress_callback(len(trials), echo)]),
        )
    echo(f"sweep {grid.name}: {len(trials)} trials x {resources.workers_per_trial} workers, "
         f"{concurrency} at a time -> {store.url_of(sweep_id)}")
    t0 = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - t0
    statuses = []
    for r in results:
        if r.error is not None:
            statuses.append("failed")
        else:
            statuses.append("diverged" if (r.metrics or {}).get("diverged") else "completed")
    summary = {"sweep_id": sweep_id, "url": store.url_of(sweep_id), "trials": len(trials),
               "completed": statuses.count("completed"), "diverged": statuses.count("diverged"),
               "failed": statuses.count("failed"), "wall_s": wall}
    echo(f"done: {summary['completed']} completed, {summary['diverged']} diverged, {summary['failed']} failed "
         f"in {wall:.1f}s -> {summary['url']}")
    return summary
