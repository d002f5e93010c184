"""RandAugment, the models' stochastic depth, configs and data loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from essence.noisy_student.config import PRESETS, ModelConfig
from essence.noisy_student.model import build_model, check_student_size, survival_probabilities
from essence.noisy_student.randaugment import OPS, rand_augment


@pytest.mark.parametrize("arch", ["resnet", "efficientnet"])
def test_stochastic_depth_survival_decays_linearly_to_0_8(arch):
    model = build_model(ModelConfig(arch=arch, width=0.25 if arch == "efficientnet" else 0.5,
                                    depth=0.5 if arch == "efficientnet" else 2.0), stochastic_depth=0.2)
    s = survival_probabilities(model)
    L = len(s)
    assert L >= 3
    assert s == pytest.approx([1 - 0.2 * i / (L - 1) for i in range(L)])
    assert s[0] == 1.0 and s[-1] == pytest.approx(0.8)
    off = build_model(ModelConfig(arch=arch, width=0.25), stochastic_depth=0.0)
    assert all(v == 1.0 for v in survival_probabilities(off))


def test_student_smaller_than_teacher_warns():
    t = build_model(ModelConfig(width=1.0))
    with pytest.warns(UserWarning, match="distillation"):
        assert not check_student_size(t, build_model(ModelConfig(width=0.5)))
    assert check_student_size(t, build_model(ModelConfig(width=2.0)))


def test_randaugment_ops_follow_official_mapping():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(rand_augment(x, 1, 10, generator=g, ops=("Invert",)), 1 - x)
    # Brightness at level m: blend with black, factor 0.1 + 1.8 m / 10 (deterministic in m)
    y = rand_augment(x * 0.4, 1, 5, generator=g, ops=("Brightness",))
    assert torch.allclose(y, x * 0.4 * 1.0, atol=1e-6)
    y = rand_augment(x * 0.4, 1, 2, generator=g, ops=("Brightness",))
    assert torch.allclose(y, x * 0.4 * 0.46, atol=1e-6)
    # TranslateX at m=10 on 28 px: 100 * 28 / 224 = 12.5 px, filled with 0.5
    img = torch.zeros(1, 1, 28, 28)
    img[..., :, 10] = 1.0
    moved = rand_augment(img, 1, 10 * 8 / 12.5, generator=torch.Generator().manual_seed(1), ops=("TranslateX",))
    col = moved[0, 0, 14].argmax().item()
    assert col in (2, 18)                              # 8 px either way
    # SolarizeAdd adds 110 * m / 10 / 255 below 128
    y = rand_augment(torch.full((1, 1, 8, 8), 0.2), 1, 10, generator=g, ops=("SolarizeAdd",))
    assert torch.allclose(y, torch.full_like(y, 0.2 + 110 / 255))


def test_randaugment_is_seeded_per_image_and_in_range():
    x = torch.rand(64, 1, 28, 28)
    a = rand_augment(x, 2, 27, generator=torch.Generator().manual_seed(3))
    b = rand_augment(x, 2, 27, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    same = x[:1].expand(64, -1, -1, -1).clone()
    c = rand_augment(same, 2, 10, generator=torch.Generator().manual_seed(4))
    distinct = {tuple(v.flatten()[:50].tolist()) for v in c}
    assert len(distinct) > 10                          # different ops per image of one batch
    with pytest.raises(ValueError, match="unknown RandAugment ops"):
        rand_augment(x, 1, 5, ops=("Blur",))
    with pytest.raises(ValueError, match="float images"):
        rand_augment(torch.zeros(2, 28, 28, dtype=torch.uint8), 1, 5)
    assert len(OPS) == 16


def test_presets_and_validation():
    for name in ("tiny", "quick", "standard", "paper"):
        cfg = PRESETS.build(name)
        assert cfg.train.precision in ("auto", "fp32")
        assert cfg.pseudo.label_type == "soft"
    assert PRESETS.build("quick").pseudo.threshold == 0.3
    with pytest.raises(ValueError, match="pseudo.label_type"):
        PRESETS.build("tiny", ["pseudo.label_type=medium"])
    with pytest.raises(ValueError, match="noise.stochastic_depth"):
        PRESETS.build("tiny", ["noise.stochastic_depth=1.5"])
    cfg = PRESETS.build("tiny", ["loop.student_width=1,2"])
    assert cfg.loop.width(1) == 1.0 and cfg.loop.width(2) == 2.0 and cfg.loop.width(5) == 2.0


def test_image_folder_bad_input(tmp_path):
    from PIL import Image

    from essence.noisy_student.data import load_image_folder

    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing", labeled=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty", labeled=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image_folder(tmp_path / "bad", labeled=False)
    mixed = tmp_path / "mixed"
    (mixed / "a").mkdir(parents=True)
    (mixed / "b").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(mixed / "a" / "1.png")
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(mixed / "b" / "2.png")
    with pytest.warns(UserWarning, match="converted to grey 28x28"):
        x, y = load_image_folder(mixed, labeled=True)
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [0, 1]


def test_split_rejects_missing_class_and_mixed_shapes(data):
    from essence.noisy_student.data import SemiSupervisedData

    y = data.labeled_y.clone()
    y[y == 3] = 0
    with pytest.raises(ValueError, match=r"no image of class\(es\) \[3\]"):
        SemiSupervisedData(labeled_x=data.labeled_x, labeled_y=y, unlabeled_x=data.unlabeled_x,
                           test_x=data.test_x, test_y=data.test_y, num_classes=4)
    with pytest.raises(ValueError, match="one shape"):
        SemiSupervisedData(labeled_x=data.labeled_x, labeled_y=data.labeled_y, unlabeled_x=data.unlabeled_x[..., :8],
                           test_x=data.test_x, test_y=data.test_y, num_classes=4)


def test_ood_images_are_seeded_and_varied():
    from essence.noisy_student.data import ood_images

    a, b = ood_images(30, 28, seed=0), ood_images(30, 28, seed=0)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == (30, 1, 28, 28)
    assert a.float().std() > 20
