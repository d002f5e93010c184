"""2-process gloo: gradients are averaged over processes, so both ranks hold the same networks, and G's first
update equals a single process on the concatenated batch."""

from __future__ import annotations

import torch

from essence.core import distributed as dist
from essence.stylegan2.config import PRESETS


def _cfg():
    # no path length / minibatch std: the only cross-process differences left are the per-rank noise maps, whose
    # strengths start at 0 (so G's first update does not depend on them)
    return PRESETS.build("tiny", {"train.max_steps": 1, "loss.pl_weight": 0.0, "model.mbstd_group": 0,
                                  "optim.batch_size": 8, "train.log_every": 1})


def _images():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(32, 1, 32, 32, generator=g) * 255).to(torch.uint8)


def _worker(rank: int) -> dict:
    from essence.stylegan2.train import train

    res = train(_cfg(), None, device="cpu", images=_images(), progress=False)
    return {"G": {k: v.clone() for k, v in res.G.state_dict().items()},
            "D": {k: v.clone() for k, v in res.D.state_dict().items()}}


def test_ddp_matches_single_process():
    from essence.stylegan2.train import train

    results = dist.launch_local(_worker, world_size=2)
    for key, v in results[0]["D"].items():
        torch.testing.assert_close(results[1]["D"][key], v, msg=f"D.{key} differs between ranks")
    for key, v in results[0]["G"].items():
        torch.testing.assert_close(results[1]["G"][key], v, msg=f"G.{key} differs between ranks")
    single = train(_cfg(), None, device="cpu", images=_images(), progress=False)
    for key, v in single.G.state_dict().items():
        if "noise" in key:
            continue
        torch.testing.assert_close(results[0]["G"][key], v, rtol=1e-4, atol=1e-5, msg=f"G.{key}")
