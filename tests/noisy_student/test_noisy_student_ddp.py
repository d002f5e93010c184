"""2-process gloo: pseudo-labeling sharded over processes and all-gathered equals one process."""

from __future__ import annotations

import torch

from essence.core import distributed as dist


def _model_and_images():
    from essence.noisy_student.config import ModelConfig
    from essence.noisy_student.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(width=0.25, num_classes=5), dropout=0.5, stochastic_depth=0.2)
    images = torch.randint(0, 256, (37, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return model, images


def _worker(rank: int) -> dict:
    from essence.noisy_student.pseudo import pseudo_label

    model, images = _model_and_images()
    p = pseudo_label(model, images, threshold=0.0, per_class=10, seed=3, batch_size=8)
    return {"world": dist.get_world_size(), "index": p.index, "targets": p.targets}


def test_sharded_pseudo_labels_equal_one_process():
    from essence.noisy_student.pseudo import pseudo_label

    model, images = _model_and_images()
    ref = pseudo_label(model, images, threshold=0.0, per_class=10, seed=3, batch_size=8)
    out = dist.launch_local(_worker, world_size=2)
    for r in out:
        assert r["world"] == 2
        assert torch.equal(r["index"], ref.index)
        # float error of the same convolutions on a different batch split
        assert torch.allclose(r["targets"], ref.targets, atol=1e-5)
