"""SIGReg under torch.distributed (2 gloo processes on CPU) equals one process holding the concatenated batch."""
import os, tempfile
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from sslmed.sigreg import SIGReg

SIZES = (10, 14)   # uneven local batches: the global N must come from the all-reduce, not world × local
K_IN, K, STEP = 6, 16, 7

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(SIZES), K, generator=g, dtype=torch.float64) * 1.3 + 0.2
    views = torch.randn(3, sum(SIZES), K, generator=g, dtype=torch.float64)
    inp = torch.randn(sum(SIZES), K_IN, generator=g, dtype=torch.float64)
    return x, views, inp

def layer():
    torch.manual_seed(1)
    return nn.Linear(K_IN, K).double()

def single():
    "Everything one process holding the whole batch computes."
    x, views, inp = data()
    sig = SIGReg(num_slices=32)
    x.requires_grad_(); views.requires_grad_()
    loss = sig(x, STEP); loss.backward()
    vloss = sig(views, STEP); vloss.backward()
    lin = layer(); sig(lin(inp), STEP).backward()
    return dict(loss=loss.detach(), grad=x.grad, vloss=vloss.detach(), vgrad=views.grad, wgrad=lin.weight.grad)

def worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, views, inp = data()
        lo, hi = sum(SIZES[:rank]), sum(SIZES[:rank + 1])
        sig = SIGReg(num_slices=32)
        xr = x[lo:hi].clone().requires_grad_()
        loss = sig(xr, STEP); loss.backward()
        vr = views[:, lo:hi].clone().requires_grad_()
        vloss = sig(vr, STEP); vloss.backward()
        model = DDP(layer())
        sig(model(inp[lo:hi]), STEP).backward()  # DDP averages the weight gradient over ranks
        torch.save(dict(loss=loss.detach(), grad=xr.grad, vloss=vloss.detach(), vgrad=vr.grad,
                        wgrad=model.module.weight.grad), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()

@pytest.fixture(scope="module")
def ranks():
    world = len(SIZES)
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(worker, args=(world, os.path.join(d, "init"), d), nprocs=world, join=True)
        return [torch.load(os.path.join(d, f"rank{r}.pt")) for r in range(world)]

def test_loss_equals_single_process(ranks):
    ref = single()
    for r in ranks:
        torch.testing.assert_close(r["loss"], ref["loss"], rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(r["vloss"], ref["vloss"], rtol=1e-5, atol=1e-8)

def test_input_gradients_equal_single_process(ranks):
    # each rank's backward returns world_size × its rows' share of d(loss)/dx (the differentiable all-reduce
    # convention), so that DDP's averaging over ranks gives the single-process gradient of any parameter
    ref, world = single(), len(SIZES)
    grad = torch.cat([r["grad"] for r in ranks]) / world
    vgrad = torch.cat([r["vgrad"] for r in ranks], dim=1) / world
    torch.testing.assert_close(grad, ref["grad"], rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(vgrad, ref["vgrad"], rtol=1e-5, atol=1e-10)

def test_ddp_parameter_gradients_equal_single_process(ranks):
    ref = single()
    for r in ranks: torch.testing.assert_close(r["wgrad"], ref["wgrad"], rtol=1e-5, atol=1e-10)
