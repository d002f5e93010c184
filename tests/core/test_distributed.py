"""Two real gloo processes: DDP gradients, all_gather (with and without gradient), broadcast, metric reduction."""

import torch

from essence.core import distributed as dist
from essence.core.testing import assert_within_float32_error as _assert_within_float32_error
from essence.metrics import Accuracy, Mean, Metric


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, generator=g), torch.randn(8, 2, generator=g)


class _Cat(Metric):
    def __init__(self):
        super().__init__()
        self.add_state("values", [], reduce="cat")
        self.add_state("biggest", torch.tensor(float("-inf")), reduce="max")

    def update(self, x):
        self.values.append(x)
        self.biggest = torch.maximum(self.biggest, x.max())

    def _compute(self, values, biggest):
        return values.tolist(), float(biggest)


def _worker(rank):
    world = dist.get_world_size()
    x, y = _data()
    local = slice(rank * 4, rank * 4 + 4)

    # 1. DDP averages gradients: equal to one process on the concatenated batch
    model = torch.nn.parallel.DistributedDataParallel(_model())
    torch.nn.functional.mse_loss(model(x[local]), y[local]).backward()
    ddp_grads = [p.grad.clone() for p in model.parameters()]

    # 1b. gradient accumulation: two micro-batches under no_sync on the first equal the whole local batch
    from essence.core.loop import accumulation_context

    acc_model = torch.nn.parallel.DistributedDataParallel(_model())
    for i, part in enumerate((slice(rank * 4, rank * 4 + 2), slice(rank * 4 + 2, rank * 4 + 4))):
        with accumulation_context(acc_model, i, 2):
            (torch.nn.functional.mse_loss(acc_model(x[part]), y[part]) / 2).backward()
    acc_grads = [p.grad.clone() for p in acc_model.parameters()]

    # 2. all_gather without and with gradient
    gathered = dist.all_gather(torch.full((2, 3), float(rank)))
    feats = torch.full((2,), float(rank + 1), requires_grad=True)
    both = dist.all_gather_with_grad(feats)
    (both * torch.arange(1.0, 5.0)).sum().backward()

    # 3. broadcast, reduce_dict, metrics
    b = dist.broadcast(torch.tensor([rank + 10.0]), src=1)
    red = dist.reduce_dict({"loss": float(rank), "acc": 1.0 + rank})
    acc = Accuracy()
    logits = torch.eye(3)[[0, 1, 2, 0]] if rank == 0 else torch.eye(3)[[1, 1, 1, 1]]
    acc.update(logits, torch.tensor([0, 1, 2, 1]))  # rank 0: 3/4 correct, rank 1: 2/4 correct
    mean = Mean()
    mean.update(torch.tensor([float(rank)] * (rank + 1)))
    cat = _Cat()
    cat.update(torch.arange(rank + 1, dtype=torch.float32) + 10 * rank)
    return dict(world=world, grads=ddp_grads, acc_grads=acc_grads, gathered=gathered, feat_grad=feats.grad,
                bcast=b.item(), red=red, acc=acc.compute(), mean=mean.compute(), cat=cat.compute())


def _reference_grads(dtype: torch.dtype) -> list[torch.Tensor]:
    """One process on the whole batch, computed in ``dtype``."""
    x, y = _data()
    model = _model().to(dtype)
    torch.nn.functional.mse_loss(model(x.to(dtype)), y.to(dtype)).backward()
    return [p.grad for p in model.parameters()]


def test_two_process_gloo():
    results = dist.launch_local(_worker, world_size=2)
    assert [r["world"] for r in results] == [2, 2]

    ref32, ref64 = _reference_grads(torch.float32), _reference_grads(torch.float64)
    for r in results:
        _assert_within_float32_error(r["grads"], ref32, ref64, what="DDP gradient")
        _assert_within_float32_error(r["acc_grads"], ref32, ref64, what="accumulated DDP gradient")

    expected = torch.cat([torch.zeros(2, 3), torch.ones(2, 3)])
    for r in results:
        assert torch.equal(r["gathered"], expected)
    # each rank's loss is sum(both * [1,2,3,4]); gradient to rank r's slice sums over both ranks' losses
    assert torch.equal(results[0]["feat_grad"], torch.tensor([2.0, 4.0]))
    assert torch.equal(results[1]["feat_grad"], torch.tensor([6.0, 8.0]))
    assert all(r["bcast"] == 11.0 for r in results)
    assert results[0]["red"] == {"acc": 1.5, "loss": 0.5}
    assert all(r["acc"] == 5 / 8 for r in results)
    assert all(abs(r["mean"] - 2 / 3) < 1e-12 for r in results)  # values 0 | 1, 1
    assert all(r["cat"] == ([0.0, 10.0, 11.0], 11.0) for r in results)


def test_helpers_work_in_one_process():
    t = torch.arange(4.0)
    assert dist.all_gather(t) is t and dist.all_gather_with_grad(t) is t
    assert torch.equal(dist.all_reduce(t, "mean"), t)
    assert dist.is_main() and dist.get_world_size() == 1
    assert dist.reduce_dict({"a": 2}) == {"a": 2.0}
    info = dist.init_distributed("cpu")
    assert info.world_size == 1 and info.is_main and info.device.type == "cpu"


class _Scorer(torch.nn.Module):
    """Context encoder + codes used after a gathered candidate encoder, as in a poly-encoder under DDP."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.ctx = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(4)])
        self.cand = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(3)])
        self.codes = torch.nn.Parameter(torch.randn(4, 16))

    def forward(self, ctx, cand):
        c = self.ctx(ctx)
        y = dist.all_gather_with_grad(self.cand(cand))            # (B_global, d), gradients flow back
        att = torch.softmax(c @ self.codes.T, -1) @ self.codes + c
        return att @ y.T                                         # (B_local, B_global)


def _scorer_data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)


def _gather_ddp_worker(rank):
    x, y = _scorer_data()
    model = torch.nn.parallel.DistributedDataParallel(_Scorer(), bucket_cap_mb=0.0005)  # many buckets
    part = slice(rank * 4, rank * 4 + 4)
    for _ in range(3):
        model.zero_grad()
        logits = model(x[part], y[part])
        torch.nn.functional.cross_entropy(logits, torch.arange(4) + rank * 4).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_gather_with_grad_inside_ddp_equals_one_process():
    results = dist.launch_local(_gather_ddp_worker, world_size=2)
    x, y = _scorer_data()
    refs = {}
    for dtype in (torch.float32, torch.float64):
        net = _Scorer().to(dtype)
        torch.nn.functional.cross_entropy(net(x.to(dtype), y.to(dtype)), torch.arange(8)).backward()
        refs[dtype] = [p.grad for p in net.parameters()]
    for grads in results:
        _assert_within_float32_error(grads, refs[torch.float32], refs[torch.float64], what="gradient")
