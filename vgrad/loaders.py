"""Real datasets from files: CIFAR-10 (torchvision's python pickles) and ImageFolder (ImageNet).

Nothing is downloaded from the internet here: a root is a local folder or an fsspec URL
(s3://...), which is copied once into a local cache folder before reading.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile

import numpy as np

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = ["test_batch"]
# per-channel mean/std of the CIFAR-10 training set (the usual normalization constants)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(ValueError):
    """A dataset root that cannot be read; the message names the files it expected."""


def local_copy(root: str, cache_dir: str | None = None, storage_options: dict | None = None) -> str:
    """A local path for ``root``: itself when local, else a cached copy of the URL's tree.

    One download per node: ranks and packed trials sharing a data_root wait on a file
    lock; the tree lands in a temp folder that is renamed into place whole."""
    if "://" not in root or root.startswith("file://"):
        return root.removeprefix("file://")
    import fcntl

    import fsspec

    cache = cache_dir or os.path.join(tempfile.gettempdir(), "vgrad-data")
    os.makedirs(cache, exist_ok=True)
    dest = os.path.join(cache, hashlib.sha256(root.encode()).hexdigest()[:16])
    with open(f"{dest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not os.path.isdir(dest):
            fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
            if not fs.exists(path):
                raise DataError(f"{root}: not found")
            tmp = tempfile.mkdtemp(prefix=".download-", dir=cache)
            fs.get(path.rstrip("/") + "/", tmp + "/", recursive=True)
            os.replace(tmp, dest)
    return dest


def _cifar_dir(root: str) -> str:
    for cand in (os.path.join(root, CIFAR_DIR), root):
        if all(os.path.isfile(os.path.join(cand, f)) for f in CIFAR_TRAIN + CIFAR_TEST):
            return cand
    raise DataError(f"{root}: no CIFAR-10 python batches; expected {CIFAR_DIR}/"
                    f"{{{', '.join(CIFAR_TRAIN + CIFAR_TEST)}}} (torchvision's format)")


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry = {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path}: expected data of shape (N, 3072) and N labels, got {data.shape}, {len(labels)}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (uint8 N x 3 x 32 x 32, int64 N), 'test': (...)} from torchvision's files."""
    d = _cifar_dir(local_copy(root))
    out = {}
    for split, names in (("train", CIFAR_TRAIN), ("test", CIFAR_TEST)):
        parts = [_read_batch(os.path.join(d, n)) for n in names]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return out


def image_folder(root: str, split: str, resolution: int, train: bool):
    """torchvision's ImageFolder on ``root/<split>`` (ImageNet's train/val layout) with the
    standard ImageNet transforms at ``resolution``."""
    from torchvision import datasets, transforms

    path = os.path.join(local_copy(root), split)
    if not os.path.isdir(path):
        raise DataError(f"{root}: no '{split}' folder; expected {root}/{split}/<class>/<image>")
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    if train:
        tf = transforms.Compose([transforms.RandomResizedCrop(resolution), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), norm])
    else:
        tf = transforms.Compose([transforms.Resize(int(resolution * 256 / 224)), transforms.CenterCrop(resolution),
                                 transforms.ToTensor(), norm])
    return datasets.ImageFolder(path, transform=tf)
