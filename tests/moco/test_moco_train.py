"""Training loop: exact resume, the CLI, and evaluation entry points (tiny shapes, synthetic images)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from essence.core.checkpoint import read_checkpoint
from essence.core.runs import Run
from essence.moco.cli import main as moco_main
from essence.moco.config import PRESETS
from essence.moco.evaluate import load_model
from essence.moco.train import train


def _images(n=128):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8)


def _cfg(*extra):
    return PRESETS.build("tiny", ["optim.batch_size=16", "train.max_steps=6", "train.ckpt_every=3",
                                  "train.log_every=1", "train.threads=1", *extra])


@pytest.mark.parametrize("mechanism", ["moco", "memory_bank"])
def test_resume_continues_identically(tmp_path, mechanism):
    cfg = _cfg(f"model.mechanism={mechanism}")
    images = _images()
    full = train(cfg, Run(tmp_path / "full"), device="cpu", progress=False, images=images)
    assert full.step == 6
    half = tmp_path / "full" / "checkpoints" / "step-000003.safetensors"
    resumed = train(cfg, Run(tmp_path / "resumed"), device="cpu", progress=False, images=images, resume=half)
    assert resumed.step == 6
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    if mechanism == "moco":
        ck = read_checkpoint(tmp_path / "full" / "checkpoints" / "step-000003.safetensors")
        # the checkpoint carries the queue, its pointer and the key encoder
        names = set(ck.module_state("moco"))
        assert {"queue", "queue_ptr"} <= names and any(n.startswith("encoder_k.") for n in names)
        assert int(ck.module_state("moco")["queue_ptr"]) == (3 * 16) % cfg.model.K
    assert [r["loss"] for r in full.history[3:]] == [r["loss"] for r in resumed.history]


def test_train_end_to_end_mechanism_and_load(tmp_path):
    cfg = _cfg("model.mechanism=end_to_end", "train.max_steps=2")
    res = train(cfg, Run(tmp_path / "e2e"), device="cpu", progress=False, images=_images())
    model, loaded_cfg, step = load_model(tmp_path / "e2e", device="cpu")
    assert step == 2 and loaded_cfg == cfg
    for (k1, v1), (k2, v2) in zip(res.model.state_dict().items(), model.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_train_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="larger than the training set"):
        train(_cfg("optim.batch_size=256"), None, device="cpu", progress=False, images=_images(64))
    with pytest.raises(ValueError, match="bn_splits"):
        train(_cfg("model.bn_splits=5"), None, device="cpu", progress=False, images=_images())


def test_cli_user_errors_exit_2(tmp_path, capsys):
    assert moco_main(["train", "--preset", "tiny", "--set", "model.K=-1", "--out", str(tmp_path / "x")]) == 2
    assert "model.K" in capsys.readouterr().err
    assert moco_main(["evaluate", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        moco_main(["trian"])


def test_cli_train_resume_and_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--preset", "tiny", "--device", "cpu", "--out", str(out), "--set", "train.max_steps=2",
            "--set", "data.train_limit=64", "--set", "data.test_limit=32", "--set", "eval.knn_bank=64"]
    assert moco_main(["train", *args]) == 0
    assert (out / "checkpoints" / "step-000002.safetensors").exists()
    assert moco_main(["train", "--resume", str(out), "--set", "train.max_steps=3", "--device", "cpu"]) == 0
    assert (out / "checkpoints" / "step-000003.safetensors").exists()
    capsys.readouterr()
    # no --device: the command line's default ("auto") must work (it once reached torch.device("auto"))
    assert moco_main(["evaluate", str(out), "--set", "eval.linear_epochs=1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["step"] == 3 and 0 <= res["knn_top1"] <= 100 and 0 <= res["linear_top1"] <= 100


def test_export_loads_into_plain_timm_and_torchvision(tmp_path):
    """The exported backbone loads (strict) into timm / torchvision ResNets built without essence, and computes
    the same features as the query encoder's backbone."""
    import timm  # noqa: F401
    import torchvision
    from safetensors import safe_open
    from safetensors.torch import load_file
    from timm.models.resnet import BasicBlock, ResNet

    from essence.moco.export import export_backbone

    cfg = _cfg("train.max_steps=2")
    res = train(cfg, Run(tmp_path / "run"), device="cpu", progress=False, images=_images())
    path = export_backbone(tmp_path / "run", tmp_path / "backbone.safetensors")
    sd = load_file(str(path))
    w, c = cfg.model.width, cfg.model.in_chans
    # timm's plain stem always has 64 channels; its "deep" stem has 2 * stem_width, which lets layer1 match
    net = ResNet(BasicBlock, [1, 1, 1, 1], channels=tuple(w * 2 ** i for i in range(4)), in_chans=c,
                 num_classes=0, stem_type="deep", stem_width=w // 2)
    net.conv1 = torch.nn.Conv2d(c, w, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    net.load_state_dict(sd)                       # strict
    x = torch.randn(3, c, 16, 16)
    ref = res.model.encoder_q.backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), ref(x), rtol=1e-5, atol=1e-5)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["arch"] == "resnet10" and meta["width"] == str(w) and "ResNet(BasicBlock" in meta["build"]
    # torchvision: a width-64 ResNet-18 (torchvision's BasicBlock has fixed width 64)
    from essence.moco.export import backbone_state_dict
    from essence.moco.model import MoCo

    torch.manual_seed(0)
    big = MoCo(cfg.model.replace(arch="resnet18", width=64, K=32))
    tv = torchvision.models.resnet18(num_classes=10)
    tv.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    tv.maxpool, tv.fc = torch.nn.Identity(), torch.nn.Identity()
    tv.load_state_dict(backbone_state_dict(big))
    with torch.no_grad():
        torch.testing.assert_close(tv.eval()(x), big.encoder_q.backbone.eval()(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="safetensors"):
        export_backbone(tmp_path / "run", tmp_path / "backbone.pt")


def _write_folder(root, n_per_class=8):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i in range(n_per_class):
                arr = (torch.rand(20, 20, generator=g) * 100 + 100 * c).to(torch.uint8).numpy()
                Image.fromarray(arr).save(root / split / name / f"{i}.png")


def test_data_folder_and_numpy_load_with_labels(tmp_path):
    import numpy as np

    from essence.moco.config import DataConfig
    from essence.moco.data import load_images

    _write_folder(tmp_path / "imgs")
    x, y = load_images(DataConfig(dataset="folder", root=str(tmp_path / "imgs")), "train")
    assert x.shape == (16, 1, 20, 20) and x.dtype == torch.uint8 and y.tolist() == [0] * 8 + [1] * 8
    xr, _ = load_images(DataConfig(dataset="folder", root=str(tmp_path / "imgs"), image_size=28), "test",
                        channels=3)
    assert xr.shape == (16, 3, 28, 28)
    arr = np.random.default_rng(0).integers(0, 256, (10, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=arr, y_train=np.arange(10) % 2, x_test=arr[:4], y_test=np.zeros(4))
    x, y = load_images(DataConfig(dataset="numpy", root=str(tmp_path / "d.npz")), "train")
    assert x.shape == (10, 3, 12, 12) and torch.equal(x[3], torch.from_numpy(arr[3]).permute(2, 0, 1))
    assert y.tolist() == [0, 1] * 5
    np.save(tmp_path / "only.npy", arr[..., 0])
    x, y = load_images(DataConfig(dataset="numpy", root=str(tmp_path / "only.npy")), "train")
    assert x.shape == (10, 1, 12, 12) and (y == -1).all()
    with pytest.raises(ValueError, match="training images only"):
        load_images(DataConfig(dataset="numpy", root=str(tmp_path / "only.npy")), "test")
    with pytest.raises(ValueError, match="uint8 or float"):
        np.save(tmp_path / "bad.npy", arr.astype(np.float32))
        load_images(DataConfig(dataset="numpy", root=str(tmp_path / "bad.npy")), "train")
    with pytest.raises(ValueError, match="data.root"):
        DataConfig(dataset="folder")


def test_cli_train_and_evaluate_on_a_folder(tmp_path, capsys):
    _write_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    args = ["--preset", "tiny", "--device", "cpu", "--out", str(out), "--set", "train.max_steps=1",
            "--set", "optim.batch_size=8", "--set", "model.bn_splits=2", "--set", "eval.batch_size=8"]
    assert moco_main(["train", "--data", str(tmp_path / "imgs"), *args]) == 0
    capsys.readouterr()
    assert moco_main(["evaluate", str(out), "--device", "cpu", "--set", "eval.linear_epochs=1"]) == 0
    res = json.loads(capsys.readouterr().out)      # the run's config remembers the folder
    assert 0 <= res["knn_top1"] <= 100 and res["step"] == 1
    assert moco_main(["train", "--data", str(tmp_path / "missing"), *args]) == 2
    assert moco_main(["export", str(out), "-o", str(tmp_path / "b.safetensors")]) == 0
    assert (tmp_path / "b.safetensors").exists()


def test_mocov2_transform_torchvision_compatible():
    import pickle

    import numpy as np
    from PIL import Image

    from essence.moco.data import MoCoV2Transform

    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))
    torch.manual_seed(0)
    a, b = MoCoV2Transform(16, channels=1)(im)
    assert a.shape == b.shape == (1, 16, 16) and a.dtype == torch.float32 and not torch.equal(a, b)
    torch.manual_seed(0)
    a2, _ = MoCoV2Transform(16, channels=1)(im)
    assert torch.equal(a, a2)                                 # torch's RNG drives it, as torchvision's
    t = pickle.loads(pickle.dumps(MoCoV2Transform(32)))        # DataLoader workers
    q, k = t(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8))
    assert q.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="channels"):
        MoCoV2Transform(16, channels=2)


def test_short_training_learns_features_better_than_random():
    """200 MoCo steps on 4096 unlabeled Fashion-MNIST images raise kNN accuracy above the same encoder at its
    random initialisation (both evaluated identically: BN re-estimated, 16 px, same bank and test images)."""
    from essence.moco.data import load_images
    from essence.moco.evaluate import evaluate_model
    from essence.moco.train import build_model

    cfg = PRESETS.build("quick", ["model.width=8", "model.K=1024", "optim.batch_size=64", "train.max_steps=200",
                                  "train.log_every=50", "train.threads=1", "eval.batch_size=512",
                                  "train.precision=fp32"])
    try:
        train_x, train_y = load_images(cfg.data, "train", limit=4096)
        test_x, test_y = load_images(cfg.data, "test", limit=1000)
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    data = (train_x, train_y, test_x, test_y)
    random_knn = evaluate_model(build_model(cfg), cfg, data=data, linear=False)["knn_top1"]
    res = train(cfg, None, device="cpu", progress=False, images=train_x)
    trained_knn = evaluate_model(res.model, cfg, data=data, linear=False)["knn_top1"]
    assert trained_knn > random_knn + 2.0, (trained_knn, random_knn)
    assert res.history[-1]["loss"] < math.log(1024 + 1) - 0.5      # the pretext task is learned (below chance)
