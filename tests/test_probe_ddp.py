"""Two gloo processes, each on half the batch, give the statistics of one process on all of it."""
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vgrad import ModelSpec, build_model
from vgrad.probe import M, Probe

BATCH = 8


def batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(BATCH, 3, 32, 32, generator=g, dtype=torch.float64), torch.randint(10, (BATCH,), generator=g)


def spec_for(arch):
    # No batch norm: DDP normalizes each rank's half-batch by its own statistics (as
    # vgrad's trials do), which is a different forward pass from one full batch.
    return ModelSpec(arch=arch, depth=8, activation="tanh", norm="none", width=4)


def worker(rank, world, rendezvous, arch, out_path):
    # a file rendezvous: no free-port race with other processes on the machine
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    net = build_model(spec_for(arch), seed=0).double()
    ddp = nn.parallel.DistributedDataParallel(net)
    probe = Probe(net, "tanh", world_size=world)
    x, y = batch()
    half = BATCH // world
    probe.start()
    nn.functional.cross_entropy(ddp(x[rank * half:(rank + 1) * half]), y[rank * half:(rank + 1) * half]).backward()
    rec = probe.finish(step=0)
    if rank == 0:
        np.savez(out_path, moments=rec.moments, weight_norm=rec.weight_norm)
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


@pytest.mark.parametrize("arch", ["plain", "residual"])
def test_two_gloo_ranks_equal_one_process(tmp_path, arch):
    out = str(tmp_path / "ddp.npz")
    mp.spawn(worker, args=(2, str(tmp_path / "rendezvous"), arch, out), nprocs=2, join=True)
    ddp = np.load(out)

    net = build_model(spec_for(arch), seed=0).double()
    probe = Probe(net, "tanh")
    x, y = batch()
    probe.start()
    nn.functional.cross_entropy(net(x), y).backward()
    single = probe.finish(step=0)

    assert ddp["moments"].shape == single.moments.shape
    assert np.array_equal(ddp["moments"][..., M["count"]], single.moments[..., M["count"]])
    others = [i for i in range(len(M)) if i != M["sum"]]
    np.testing.assert_allclose(ddp["moments"][..., others], single.moments[..., others], rtol=1e-9, atol=1e-300)
    # sums can cancel to ~0 (the head's signal sums to zero per image): judge them by
    # sqrt(n * sum x^2) >= sum |x|, the scale of the terms
    diff = np.abs(ddp["moments"][..., M["sum"]] - single.moments[..., M["sum"]])
    assert np.all(diff <= 1e-9 * np.sqrt(single.moments[..., M["count"]] * single.moments[..., M["sumsq"]]))
    np.testing.assert_allclose(ddp["weight_norm"], single.weight_norm, rtol=1e-12)
