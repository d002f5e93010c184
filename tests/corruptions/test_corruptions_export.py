"""export: a CIFAR-10-C-style set written, re-loaded and evaluated equals the in-memory corrupted set; the
ImageNet-C folder layout with JPEG q85 files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from essence.corruptions.cli import main
from essence.corruptions.evaluate import corrupted_test_set, per_item_errors
from essence.corruptions.export import export, load_cifar_c, read_image_folder

X = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
Y = np.array([0, 1, 2, 0, 1, 2])
NAMES = ["gaussian_noise", "contrast"]


def test_cifar_c_export_reloads_and_evaluates_like_the_in_memory_set(tmp_path):
    export(X, Y, tmp_path, layout="cifar-c", names=NAMES, seed=3, batch_size=4)
    want = corrupted_test_set(X, NAMES, seed=3, cache=False)                     # (C, 5, N, ch, H, W)
    x, y = load_cifar_c(tmp_path, "gaussian_noise")
    assert x.shape == (30, 32, 32, 3) and y.tolist() == np.tile(Y, 5).tolist()
    for s in range(1, 6):
        xs, ys = load_cifar_c(tmp_path, "gaussian_noise", s)
        assert np.array_equal(xs, want[0, s - 1].transpose(0, 2, 3, 1)) and np.array_equal(ys, Y)
    # evaluating the re-loaded files gives the same errors as the in-memory set
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3)).eval()
    clean = np.ascontiguousarray(X.transpose(0, 3, 1, 2))
    _, mem = per_item_errors(model, clean, want, Y)
    loaded = np.stack([np.stack([load_cifar_c(tmp_path, n, s)[0].transpose(0, 3, 1, 2) for s in range(1, 6)])
                       for n in NAMES])
    _, disk = per_item_errors(model, clean, loaded, Y)
    assert np.array_equal(mem, disk)
    with pytest.raises(ValueError, match="severity"):
        load_cifar_c(tmp_path, "contrast", 6)


def test_imagenet_c_folder_layout_from_an_image_folder(tmp_path):
    src = tmp_path / "val"
    for i, img in enumerate(X[:4]):
        (src / f"class{Y[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(src / f"class{Y[i]}" / f"img{i}.png")
    out = tmp_path / "c"
    assert main(["export", str(src), "-o", str(out), "--layout", "imagenet-c", "--names", "contrast",
                 "--severities", "1,5", "--seed", "0"]) == 0
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.JPEG"))
    assert files[0] == "contrast/1/class0/img0.JPEG" and len(files) == 8
    images, labels, names = read_image_folder(src)
    want = corrupted_test_set(images, ["contrast"], seed=0, cache=False)[0, 4, 0].transpose(1, 2, 0)
    got = np.asarray(Image.open(out / "contrast" / "5" / "class0" / "img0.JPEG"))
    from essence.corruptions import jpeg_storage
    assert np.array_equal(got, jpeg_storage(np.ascontiguousarray(want)))          # Pillow JPEG q85 of the pixels
    with pytest.raises(ValueError, match="stacks all five"):
        export(X, Y, tmp_path / "x", layout="cifar-c", names=NAMES, severities=(1,))


def test_evaluate_a_torchvision_model_on_an_image_folder(tmp_path):
    import json

    import torchvision

    src = tmp_path / "val"
    for i, img in enumerate(X):
        (src / f"class{Y[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(src / f"class{Y[i]}" / f"img{i}.png")
    torch.manual_seed(0)
    net = torchvision.models.get_model("resnet18", weights=None)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "run"
    assert main(["evaluate", "--model", "torchvision:resnet18", "--weights", str(tmp_path / "w.pt"), "--data",
                 str(src), "--names", "contrast,fog", "--device", "cpu", "--out", str(out)]) == 0
    errors = json.loads((out / "errors.json").read_text())
    assert set(errors["errors"]) == {"contrast", "fog"} and len(errors["errors"]["fog"]) == 5
    assert main(["evaluate", "--model", "torchvision:resnet_nope", "--data", str(src)]) == 2
    assert main(["evaluate", "--model", "torchvision:resnet18", "--weights", str(tmp_path / "nope.pt"),
                 "--data", str(src)]) != 0
