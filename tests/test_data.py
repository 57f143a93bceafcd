"""Datasets and batches: real file formats written here, checked against what was written.

CIFAR-10 is written in torchvision's python-pickle layout, ImageNet as a tiny JPEG
ImageFolder tree; nothing of torch, torchvision or PIL is mocked.  The key property of
``Batches`` is that the global batch does not depend on the number of DDP ranks.
"""
import os
import pickle
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from vgrad.batches import EVAL_BATCH, PAD, Batches
from vgrad.data import SyntheticImages
from vgrad.loaders import (CIFAR_DIR, CIFAR_MEAN, CIFAR_STD, CIFAR_TEST, CIFAR_TRAIN, IMAGENET_MEAN,
                           IMAGENET_STD, DataError, image_folder, load_cifar10)
from vgrad.spec import TrialSpec

CPU = torch.device("cpu")
CIFAR_PER_BATCH = 3  # images per data_batch_i: 15 training images
CIFAR_NUM_TEST = 5


def trial(**flat) -> TrialSpec:
    return TrialSpec.from_flat(flat)


def make_batches(t: TrialSpec, rank: int = 0, world: int = 1, dtype=torch.float32, **kw) -> Batches:
    return Batches(t, device=CPU, dtype=dtype, rank=rank, world=world, **kw)


# ---------------------------------------------------------------- CIFAR-10 files


def write_cifar(root) -> dict:
    """torchvision's cifar-10-batches-py under ``root``; returns what was written.

    Image 0 of data_batch_1 has a red plane that encodes its (row, col) position and flat
    green and blue planes, so the CHW row order and the channel order are both checked.
    """
    d = os.path.join(root, CIFAR_DIR)
    os.makedirs(d)
    rng = np.random.default_rng(1234)
    written = {}
    for k, name in enumerate(CIFAR_TRAIN + CIFAR_TEST):
        n = CIFAR_NUM_TEST if name in CIFAR_TEST else CIFAR_PER_BATCH
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        if name == CIFAR_TRAIN[0]:
            data[0, :1024] = np.arange(1024) % 256  # red: value (32 * row + col) % 256
            data[0, 1024:2048] = 100  # green
            data[0, 2048:] = 50  # blue
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        entry = {"batch_label": f"{'testing' if name in CIFAR_TEST else 'training'} batch {k + 1} of 5",
                 "labels": labels, "data": data,
                 "filenames": [f"img_{k}_{i}.png" for i in range(n)]}
        with open(os.path.join(d, name), "wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[name] = (data.copy(), list(labels))
    with open(os.path.join(d, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"], "num_cases_per_batch": CIFAR_PER_BATCH,
                     "num_vis": 3072}, f, protocol=2)
    return written


def expected_split(written: dict, names) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([written[n][0] for n in names]).reshape(-1, 3, 32, 32)
    y = np.concatenate([np.asarray(written[n][1], dtype=np.int64) for n in names])
    return x, y


@pytest.fixture
def cifar_root(tmp_path):
    root = tmp_path / "cifar"
    return str(root), write_cifar(str(root))


@pytest.mark.parametrize("form", ["parent", "batches_dir", "file_url", "file_url_batches_dir"])
def test_load_cifar10_returns_what_was_written(cifar_root, form):
    root, written = cifar_root
    given = {"parent": root, "batches_dir": os.path.join(root, CIFAR_DIR), "file_url": "file://" + root,
             "file_url_batches_dir": "file://" + os.path.join(root, CIFAR_DIR)}[form]
    out = load_cifar10(given)
    assert set(out) == {"train", "test"}
    for split, names in (("train", CIFAR_TRAIN), ("test", CIFAR_TEST)):
        x, y = out[split]
        want_x, want_y = expected_split(written, names)
        assert x.dtype == np.uint8 and x.shape == (len(want_y), 3, 32, 32)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x, want_x)
        np.testing.assert_array_equal(y, want_y)
    # training set = the five batches concatenated in order
    x, y = out["train"]
    assert len(y) == 5 * CIFAR_PER_BATCH
    for i, name in enumerate(CIFAR_TRAIN):
        part = slice(i * CIFAR_PER_BATCH, (i + 1) * CIFAR_PER_BATCH)
        np.testing.assert_array_equal(x[part].reshape(CIFAR_PER_BATCH, 3072), written[name][0])
        assert y[part].tolist() == written[name][1]


def test_load_cifar10_channel_and_row_order(cifar_root):
    root, _ = cifar_root
    img = load_cifar10(root)["train"][0][0]
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    np.testing.assert_array_equal(img[0], (32 * rows + cols) % 256)  # first 1024 values: red, row-major
    assert (img[1] == 100).all() and (img[2] == 50).all()
    assert img[0, 1, 3] == 35 and img[0, 31, 31] == (32 * 31 + 31) % 256


@pytest.mark.parametrize("missing", ["data_batch_3", "test_batch"])
def test_load_cifar10_missing_file_names_expected_files(cifar_root, missing):
    root, _ = cifar_root
    os.remove(os.path.join(root, CIFAR_DIR, missing))
    with pytest.raises(DataError) as e:
        load_cifar10(root)
    msg = str(e.value)
    assert root in msg and CIFAR_DIR in msg
    for name in CIFAR_TRAIN + CIFAR_TEST:
        assert name in msg, (name, msg)
    assert isinstance(e.value, ValueError)


def test_load_cifar10_empty_or_absent_root_raises(tmp_path):
    with pytest.raises(DataError, match="data_batch_1"):
        load_cifar10(str(tmp_path))
    with pytest.raises(DataError, match="test_batch"):
        load_cifar10(str(tmp_path / "does-not-exist"))


def test_load_cifar10_bad_shape_raises(cifar_root):
    root, _ = cifar_root
    path = os.path.join(root, CIFAR_DIR, "data_batch_2")
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DataError, match="data_batch_2"):
        load_cifar10(root)


def test_load_cifar10_from_an_fsspec_url(cifar_root, tmp_path):
    """A non-local root (fsspec's in-memory filesystem, a real fsspec backend) is copied once."""
    import fsspec

    root, written = cifar_root
    url = f"memory://vgrad-test-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("memory")
    for name in CIFAR_TRAIN + CIFAR_TEST:
        with open(os.path.join(root, CIFAR_DIR, name), "rb") as f:
            fs.pipe(f"{url.removeprefix('memory://')}/{CIFAR_DIR}/{name}", f.read())
    try:
        from vgrad.loaders import local_copy

        cache = local_copy(url, cache_dir=str(tmp_path / "cache"))
        assert os.path.isdir(os.path.join(cache, CIFAR_DIR))
        assert not [n for n in os.listdir(tmp_path / "cache") if n.startswith(".download-")]  # renamed whole
        fs.rm(url.removeprefix("memory://") + f"/{CIFAR_DIR}/test_batch")
        assert local_copy(url, cache_dir=str(tmp_path / "cache")) == cache  # copied once: no second download
        out = load_cifar10(cache)
        for split, names in (("train", CIFAR_TRAIN), ("test", CIFAR_TEST)):
            want_x, want_y = expected_split(written, names)
            np.testing.assert_array_equal(out[split][0], want_x)
            np.testing.assert_array_equal(out[split][1], want_y)
    finally:
        fs.rm(url.removeprefix("memory://"), recursive=True)


# ---------------------------------------------------------------- CIFAR-10 through Batches


def test_cifar_batches_normalized_resident(cifar_root):
    root, written = cifar_root
    t = trial(dataset="cifar10", data_root=root, input="cifar", batch_size=4, augment=False)
    b = make_batches(t, dtype=torch.float64)
    assert b.kind == "resident" and b.n_train == 15 and b.n_test == CIFAR_NUM_TEST
    x, y = b.train
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.float64 and y.dtype == torch.int64
    want_x, want_y = expected_split(written, CIFAR_TRAIN)
    assert y.tolist() == want_y.tolist()
    # pixel (row 1, col 3) of image 0: red 35, green 100, blue 50, by hand
    assert x[0, 0, 1, 3].item() == pytest.approx((35 / 255 - 0.4914) / 0.2470, rel=1e-5)
    assert x[0, 1, 1, 3].item() == pytest.approx((100 / 255 - 0.4822) / 0.2435, rel=1e-5)
    assert x[0, 2, 1, 3].item() == pytest.approx((50 / 255 - 0.4465) / 0.2616, rel=1e-5)
    # and every pixel of both splits
    mean, std = np.array(CIFAR_MEAN)[None, :, None, None], np.array(CIFAR_STD)[None, :, None, None]
    np.testing.assert_allclose(x.numpy(), (want_x / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    tx, ty = b.test
    want_tx, want_ty = expected_split(written, CIFAR_TEST)
    np.testing.assert_allclose(tx.numpy(), (want_tx / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    assert ty.tolist() == want_ty.tolist()
    # without augmentation a training batch is the stored images at its indices
    bx, by = b.train_batch(0, 1)
    idx = b._local_indices(0, 1)
    assert torch.equal(bx, x[idx]) and torch.equal(by, y[idx])


@pytest.mark.parametrize("batch_size, cap, steps", [(4, None, 3), (5, None, 3), (2, None, 7), (4, 2, 2),
                                                    (4, 10, 3), (15, None, 1)])
def test_cifar_steps_per_epoch(cifar_root, batch_size, cap, steps):
    root, _ = cifar_root
    t = trial(dataset="cifar10", data_root=root, input="cifar", batch_size=batch_size, steps_per_epoch=cap)
    b = make_batches(t)
    assert b.steps_per_epoch == steps == (min(15 // batch_size, cap) if cap else 15 // batch_size)
    assert [s for s, _, _ in b.epoch(0)] == list(range(steps))


def test_cifar_fewer_images_than_a_batch_raises(cifar_root):
    root, _ = cifar_root
    with pytest.raises(ValueError, match="fewer than one batch"):
        make_batches(trial(dataset="cifar10", data_root=root, input="cifar", batch_size=16))


def test_batch_size_not_divisible_by_world_raises():
    with pytest.raises(ValueError, match="not divisible"):
        make_batches(trial(batch_size=6, num_train=12, num_test=4), rank=0, world=4)


def _match_rows(got: torch.Tensor, table: torch.Tensor) -> list[int]:
    """Index in ``table`` of each row of ``got`` (exact equality; rows of table are distinct)."""
    out = []
    for g in got:
        hits = [i for i in range(len(table)) if torch.equal(g, table[i])]
        assert len(hits) == 1, hits
        out.append(hits[0])
    return out


@pytest.mark.parametrize("world", [1, 2, 3])
def test_cifar_test_batches_cover_every_test_image_once(cifar_root, world):
    root, _ = cifar_root
    t = trial(dataset="cifar10", data_root=root, input="cifar", batch_size=6)
    seen = []
    for rank in range(world):
        b = make_batches(t, rank=rank, world=world)
        for x, y in b.test_batches():
            rows = _match_rows(x, b.test[0])
            assert y.tolist() == b.test[1][rows].tolist()
            seen += rows
    assert sorted(seen) == list(range(CIFAR_NUM_TEST))


@pytest.mark.parametrize("world", [1, 2])
def test_synthetic_test_batches_cover_every_image_once_in_several_batches(world):
    n_test = EVAL_BATCH * 2 + 37
    t = trial(num_train=8, num_test=n_test, batch_size=4, resolution=8)
    ids = []
    for rank in range(world):
        b = make_batches(t, rank=rank, world=world)
        where = {img.numpy().tobytes(): i for i, img in enumerate(b.test[0])}
        assert len(where) == n_test  # distinct images: each one identifies its index
        sizes = []
        for x, y in b.test_batches():
            sizes.append(len(y))
            rows = [where[img.numpy().tobytes()] for img in x]
            assert y.tolist() == b.test[1][rows].tolist()
            ids += rows
        assert len(sizes) > 1 and max(sizes) <= max(b.local, EVAL_BATCH)
    assert sorted(ids) == list(range(n_test))


# ---------------------------------------------------------------- world-size invariance


SYN = dict(dataset="synthetic", resolution=32, num_train=70, num_test=8, batch_size=8, seed=3)
POINTS = [(0, 0), (0, 5), (1, 2), (3, 7)]  # (epoch, step); 70 // 8 = 8 steps per epoch


@pytest.fixture(scope="module")
def synthetic_worlds():
    """{(augment, world): [Batches of rank 0..world-1]} for the synthetic resident dataset."""
    out = {}
    for augment in (False, True):
        t = trial(**SYN, augment=augment)
        for world in (1, 2, 4):
            out[augment, world] = [make_batches(t, rank=r, world=world) for r in range(world)]
    return out


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("world", [2, 4])
def test_global_batch_same_for_any_world(synthetic_worlds, augment, world):
    (one,), ranks = synthetic_worlds[augment, 1], synthetic_worlds[augment, world]
    assert one.kind == "resident" and one.steps_per_epoch == 8
    for b in ranks:
        assert b.local == 8 // world and b.steps_per_epoch == one.steps_per_epoch
    for epoch, step in POINTS:
        x1, y1 = one.train_batch(epoch, step)
        parts = [b.train_batch(epoch, step) for b in ranks]
        assert all(p[0].shape == (8 // world, 3, 32, 32) for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x1), (epoch, step)
        assert torch.equal(torch.cat([p[1] for p in parts]), y1), (epoch, step)
        idx = torch.cat([b._local_indices(epoch, step) for b in ranks])
        assert torch.equal(idx, one._local_indices(epoch, step))


@pytest.mark.parametrize("augment", [False, True])
def test_epoch_iteration_same_for_any_world(synthetic_worlds, augment):
    (one,), (r0, r1) = synthetic_worlds[augment, 1], synthetic_worlds[augment, 2]
    for e in (0, 2):
        full, a, b = list(one.epoch(e)), list(r0.epoch(e)), list(r1.epoch(e))
        assert len(full) == len(a) == len(b) == 8
        for (s, x, y), (sa, xa, ya), (sb, xb, yb) in zip(full, a, b):
            assert s == sa == sb
            assert torch.equal(torch.cat([xa, xb]), x) and torch.equal(torch.cat([ya, yb]), y)
            x2, y2 = one.train_batch(e, s)
            assert torch.equal(x, x2) and torch.equal(y, y2)


def test_epoch_is_a_permutation_and_epochs_differ(synthetic_worlds):
    (one,) = synthetic_worlds[False, 1]
    orders = []
    for e in range(3):
        idx = torch.cat([one._local_indices(e, s) for s in range(one.steps_per_epoch)])
        assert len(idx) == 64 and len(set(idx.tolist())) == 64  # no image twice in an epoch
        assert 0 <= idx.min() and idx.max() < 70
        orders.append(idx.tolist())
    assert orders[0] != orders[1] and orders[1] != orders[2] and orders[0] != orders[2]
    x0, _ = one.train_batch(0, 0)
    x1, _ = one.train_batch(1, 0)
    assert not torch.equal(x0, x1)


@pytest.mark.parametrize("augment", [False, True])
def test_same_seed_epoch_step_gives_same_batch_on_fresh_object(synthetic_worlds, augment):
    (one,) = synthetic_worlds[augment, 1]
    fresh = make_batches(trial(**SYN, augment=augment))
    for epoch, step in POINTS:
        x, y = one.train_batch(epoch, step)
        x2, y2 = fresh.train_batch(epoch, step)
        assert torch.equal(x, x2) and torch.equal(y, y2)
    other_seed = make_batches(trial(**{**SYN, "seed": 4}, augment=augment))
    assert not torch.equal(other_seed._local_indices(0, 0), one._local_indices(0, 0))


# ---------------------------------------------------------------- augmentation


def _windows(img: torch.Tensor):
    """Every 32x32 window of the PAD-zero-padded image, and its horizontal mirror."""
    c, h, w = img.shape
    xp = torch.zeros(c, h + 2 * PAD, w + 2 * PAD, dtype=img.dtype)
    xp[:, PAD:PAD + h, PAD:PAD + w] = img
    for oy in range(2 * PAD + 1):
        for ox in range(2 * PAD + 1):
            win = xp[:, oy:oy + h, ox:ox + w]
            yield (oy, ox, False), win
            yield (oy, ox, True), win.flip(-1)


def _crop_flip_of(aug: torch.Tensor, orig: torch.Tensor):
    return [k for k, win in _windows(orig) if torch.equal(aug, win)]


@pytest.mark.parametrize("source", ["synthetic", "cifar10"])
def test_augmentation_is_padded_crop_and_flip(synthetic_worlds, cifar_root, source):
    if source == "synthetic":
        (b,) = synthetic_worlds[True, 1]
        points = [(0, 0), (2, 3)]
    else:
        root, _ = cifar_root
        b = make_batches(trial(dataset="cifar10", data_root=root, input="cifar", batch_size=5, augment=True))
        points = [(0, 0), (1, 2)]
    found = []
    for epoch, step in points:
        x, y = b.train_batch(epoch, step)
        idx = b._local_indices(epoch, step)
        orig_x, orig_y = b.train[0][idx], b.train[1][idx]
        assert torch.equal(y, orig_y) and x.shape == orig_x.shape
        for i in range(len(idx)):
            keys = _crop_flip_of(x[i], orig_x[i])
            assert keys, f"image {i} of ({epoch}, {step}) is no padded crop/flip of its original"
            found.append(keys[0])
    # it really augments: several offsets and both flip states occur, not only the identity
    assert any(k != (PAD, PAD, False) for k in found)
    assert {k[2] for k in found} == {False, True}
    assert len({k[:2] for k in found}) > 2


def test_no_augmentation_gives_stored_images(synthetic_worlds):
    (b,) = synthetic_worlds[False, 1]
    for epoch, step in POINTS:
        x, y = b.train_batch(epoch, step)
        idx = b._local_indices(epoch, step)
        assert torch.equal(x, b.train[0][idx]) and torch.equal(y, b.train[1][idx])


def test_synthetic_resident_matches_dataset():
    t = trial(**SYN, augment=False)
    b = make_batches(t)
    ds = SyntheticImages(num_classes=10, resolution=32, size=70, seed=3)
    x, y = ds.batch([0, 17, 69])
    assert torch.equal(b.train[0][[0, 17, 69]], x) and torch.equal(b.train[1][[0, 17, 69]], y)
    tx, ty = SyntheticImages(num_classes=10, resolution=32, size=8, seed=3, split="test").batch(range(8))
    assert torch.equal(b.test[0], tx) and torch.equal(b.test[1], ty)


def test_synthetic_large_resolution_batches_same_for_any_world():
    """ImageNet-sized synthetic images are made per batch on the host: same global batches."""
    t = trial(dataset="synthetic", input="imagenet", resolution=72, num_train=20, num_test=4, batch_size=4,
              seed=1, augment=False)
    one = make_batches(t)
    r0, r1 = make_batches(t, rank=0, world=2), make_batches(t, rank=1, world=2)
    assert one.kind == "synthetic" and one.steps_per_epoch == 5
    for epoch, step in [(0, 0), (1, 4)]:
        x, y = one.train_batch(epoch, step)
        assert x.shape == (4, 3, 72, 72)
        (xa, ya), (xb, yb) = r0.train_batch(epoch, step), r1.train_batch(epoch, step)
        assert torch.equal(torch.cat([xa, xb]), x) and torch.equal(torch.cat([ya, yb]), y)


# ---------------------------------------------------------------- ImageFolder (ImageNet layout)


CLASSES = ["zebra", "apple", "mango"]  # sorted: apple=0, mango=1, zebra=2
COLORS = {"apple": (200, 30, 40), "mango": (240, 180, 20), "zebra": (90, 90, 90)}
PER_CLASS = {"train": 4, "val": 2}


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    for split, n in PER_CLASS.items():
        for cls in CLASSES:
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                # solid class colour plus a small per-image ramp (40 wide x 48 high)
                a = np.empty((48, 40, 3), np.uint8)
                a[:] = COLORS[cls]
                a[:, :, 0] = np.clip(a[:, :, 0].astype(int) + i, 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.jpg", quality=95)
    return str(root)


def test_image_folder_loads_sorted_classes(folder_root):
    ds = image_folder(folder_root, "train", 32, train=True)
    assert ds.classes == sorted(CLASSES) and ds.class_to_idx == {"apple": 0, "mango": 1, "zebra": 2}
    assert len(ds) == 3 * PER_CLASS["train"]
    for path, target in ds.samples:
        assert os.path.basename(os.path.dirname(path)) == sorted(CLASSES)[target]
    for i in (0, 5, 11):
        x, y = ds[i]
        assert isinstance(x, torch.Tensor) and x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert y == ds.targets[i]
    assert sorted(ds.targets) == [0] * 4 + [1] * 4 + [2] * 4


def test_image_folder_val_is_normalized_center_crop(folder_root):
    ds = image_folder(folder_root, "val", 32, train=False)
    assert len(ds) == 3 * PER_CLASS["val"]
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 32, 32)
        colour = np.array(COLORS[sorted(CLASSES)[y]], float) / 255
        want = (colour - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        got = x.mean(dim=(1, 2)).numpy()
        np.testing.assert_allclose(got, want, atol=0.1)  # JPEG and the ramp: a few levels off


def test_image_folder_missing_split_raises(folder_root, tmp_path):
    with pytest.raises(DataError, match="'test' folder") as e:
        image_folder(folder_root, "test", 32, train=False)
    assert folder_root in str(e.value)
    with pytest.raises(DataError, match="'train' folder"):
        image_folder(str(tmp_path), "train", 32, train=True)


def test_image_folder_file_url(folder_root):
    ds = image_folder("file://" + folder_root, "val", 32, train=False)
    assert len(ds) == 6 and ds.classes == sorted(CLASSES)


def _folder_trial(root, **kw):
    return trial(dataset="imagefolder", data_root=root, input="imagenet", resolution=32, batch_size=4, **kw)


def test_folder_batches_epoch_shapes_and_labels(folder_root):
    b = make_batches(_folder_trial(folder_root), loader_workers=0)
    assert b.kind == "folder" and b.n_train == 12 and b.n_test == 6 and b.steps_per_epoch == 3
    steps = []
    for step, x, y in b.epoch(0):
        steps.append(step)
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and ((0 <= y) & (y < 3)).all()
        want = [b.train.targets[i] for i in b._local_indices(0, step).tolist()]
        assert y.tolist() == want
    assert steps == [0, 1, 2]
    seen = []
    for x, y in b.test_batches():
        assert x.shape[1:] == (3, 32, 32)
        seen += y.tolist()
    assert sorted(seen) == [0, 0, 1, 1, 2, 2]


def test_folder_batches_same_images_for_any_world(folder_root):
    t = _folder_trial(folder_root)
    one = make_batches(t, loader_workers=0)
    ranks = [make_batches(t, rank=r, world=2, loader_workers=0) for r in range(2)]
    full = list(one.epoch(1))
    parts = [list(b.epoch(1)) for b in ranks]
    assert len(full) == len(parts[0]) == len(parts[1]) == 3
    for (s, x, y), (sa, xa, ya), (sb, xb, yb) in zip(full, *parts):
        assert s == sa == sb and xa.shape == xb.shape == (2, 3, 32, 32)
        assert torch.equal(torch.cat([ya, yb]), y)
        idx = torch.cat([b._local_indices(1, s) for b in ranks])
        assert torch.equal(idx, one._local_indices(1, s))
    # the held-out set: every val image once across ranks
    seen = [y for b in ranks for _, ys in b.test_batches() for y in ys.tolist()]
    assert sorted(seen) == [0, 0, 1, 1, 2, 2]


# ---------------------------------------------------------------- synthetic images


def test_synthetic_deterministic_per_index():
    ds = SyntheticImages(num_classes=10, resolution=16, size=50, seed=7)
    x, y = ds.batch(range(6))
    x2, y2 = ds.batch([5, 2])
    assert torch.equal(x2, x[[5, 2]]) and torch.equal(y2, y[[5, 2]])
    xi, yi = ds[3]
    assert torch.equal(xi, x[3]) and yi == y[3]
    again = SyntheticImages(num_classes=10, resolution=16, size=50, seed=7)
    assert torch.equal(again.batch(range(6))[0], x)
    other = SyntheticImages(num_classes=10, resolution=16, size=50, seed=8)
    assert not torch.equal(other.batch(range(6))[0], x)
    assert ds.batch([1], dtype=torch.float64)[0].dtype == torch.float64
    with pytest.raises(IndexError):
        ds.batch([50])
    with pytest.raises(IndexError):
        ds.batch([-1])
    with pytest.raises(ValueError, match="valid choices: train, test"):
        SyntheticImages(num_classes=10, resolution=16, size=50, seed=7, split="val")


def test_synthetic_splits_differ():
    """The held-out images must not be training images (data.py: a function of (seed, split, index))."""
    kw = dict(num_classes=10, resolution=16, size=20, seed=7)
    train, test = SyntheticImages(**kw), SyntheticImages(**kw, split="test")
    assert torch.equal(train.templates, test.templates)  # same classes...
    xa, _ = train.batch(range(20))
    xb, _ = test.batch(range(20))
    same_index = [i for i in range(20) if torch.equal(xa[i], xb[i])]
    assert not same_index, f"test images {same_index} are the training images of the same index"
    for i in range(20):  # ...but no test image is any training image
        for j in range(20):
            assert not torch.equal(xa[i], xb[j]), (i, j)


@pytest.fixture(scope="module")
def synthetic_sets():
    kw = dict(num_classes=10, resolution=16, seed=11)
    train = SyntheticImages(size=2000, **kw).batch(range(2000))
    test = SyntheticImages(size=500, split="test", **kw).batch(range(500))
    return train, test


def test_synthetic_statistics(synthetic_sets):
    (x, y), _ = synthetic_sets
    assert x.shape == (2000, 3, 16, 16) and x.dtype == torch.float32
    assert 0.8 < x.std().item() < 1.25 and abs(x.mean().item()) < 0.3
    per_image = x.flatten(1).std(dim=1)
    assert 0.7 < per_image.min().item() and per_image.max().item() < 1.4
    assert y.dtype == torch.int64 and y.min().item() >= 0 and y.max().item() < 10
    counts = torch.bincount(y, minlength=10)
    assert (counts > 120).all() and (counts < 280).all(), counts  # uniform over classes


def test_synthetic_is_learnable(synthetic_sets):
    (x, y), (tx, ty) = synthetic_sets
    means = torch.stack([x[y == c].flatten(1).mean(0) for c in range(10)])  # nearest class mean
    pred = torch.cdist(tx.flatten(1), means).argmin(1)
    acc = (pred == ty).float().mean().item()
    assert acc > 0.5, acc  # chance is 0.1
