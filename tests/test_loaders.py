"""Data-set readers on tiny files written in each data set's real on-disk format."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from catrs_adapters.data import CORRUPTIONS, load_cifar10, load_cifar10c, load_imagenet, load_mnist, read_corruption
from catrs_adapters.data.imagenet import ImageFolderArray
from catrs_plugin.certification import certify_to_file
from catrs_plugin.registry import get_registry


def _cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """CIFAR's row format: 1024 red, then 1024 green, then 1024 blue values, each row-major."""
    return np.stack([np.concatenate([image[:, :, c].ravel() for c in range(3)]) for image in images_hwc])


def _write_cifar10(root, rng):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = {}, {}
    for name, count in [*((f"data_batch_{i}", 2) for i in range(1, 6)), ("test_batch", 3)]:
        images[name] = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        labels[name] = [int(v) for v in rng.integers(0, 10, count)]
        batch = {"batch_label": f"{name} of 6", "labels": labels[name], "data": _cifar_rows(images[name]),
                 "filenames": [f"img_{i}.png" for i in range(count)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    return images, labels


def test_cifar10_python_batches(tmp_path):
    images, labels = _write_cifar10(tmp_path, np.random.default_rng(0))
    x, y = load_cifar10(data_dir=tmp_path)
    assert x.dtype == np.float32 and x.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(x, images["test_batch"].transpose(0, 3, 1, 2) / 255.0, rtol=0, atol=1e-7)
    assert y.tolist() == labels["test_batch"]
    spec = get_registry().dataset("cifar10")
    x_train, y_train = spec.load("train", data_dir=str(tmp_path), n_examples=7)
    assert x_train.shape == (7, 3, 32, 32)
    assert y_train.tolist() == sum((labels[f"data_batch_{i}"] for i in range(1, 6)), [])[:7]


def test_cifar_pickles_holding_code_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("this would run",))

    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": Evil(), "labels": [0]}, handle)
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        load_cifar10(data_dir=tmp_path)


def test_missing_files_name_the_path_and_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py/test_batch.*cs\.toronto\.edu"):
        load_cifar10(data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10-C/labels\.npy.*zenodo\.org/records/2535967"):
        read_corruption("fog", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw/t10k-images-idx3-ubyte.*yann\.lecun\.com"):
        load_mnist(data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"val'? does not exist.*image-net\.org"):
        load_imagenet(data_dir=tmp_path)


def _write_cifar10c(root, per_severity, corruptions, rng):
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    labels = np.tile(rng.integers(0, 10, per_severity), 5).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    images = {c: rng.integers(0, 256, (5 * per_severity, 32, 32, 3), dtype=np.uint8) for c in corruptions}
    for corruption, array in images.items():
        np.save(folder / f"{corruption}.npy", array)
    return labels, images


def test_cifar10c_rows_severities_and_robustbench_selection(tmp_path):
    labels, images = _write_cifar10c(tmp_path, 4, ("fog", "snow"), np.random.default_rng(0))
    x, y, rows = read_corruption("fog", tmp_path, severities=(2, 5))
    assert rows.tolist() == [4, 5, 6, 7, 16, 17, 18, 19]
    np.testing.assert_allclose(x, images["fog"][rows].transpose(0, 3, 1, 2) / 255.0, rtol=0, atol=1e-7)
    assert y.tolist() == labels[rows].tolist() and y.dtype == np.int64
    whole_x, whole_y = get_registry().dataset("cifar10c").load("snow", data_dir=str(tmp_path))
    assert whole_x.shape == (20, 3, 32, 32) and whole_y.tolist() == labels.tolist()
    x, y = load_cifar10c(5, severity=3, data_dir=tmp_path, corruptions=("fog", "snow"))
    expected = np.concatenate([images["fog"][8:11], images["snow"][8:10]])  # ceil(5 / 2) = 3 per corruption
    np.testing.assert_allclose(x, expected.transpose(0, 3, 1, 2) / 255.0, rtol=0, atol=1e-7)
    x, y = load_cifar10c(6, severity=3, data_dir=tmp_path, corruptions=("fog", "snow"))
    shuffled_x, shuffled_y = load_cifar10c(6, severity=3, data_dir=tmp_path, corruptions=("fog", "snow"), shuffle=True)
    order = [next(i for i in range(6) if np.array_equal(x[i], image)) for image in shuffled_x]
    assert sorted(order) == list(range(6)) and order != list(range(6)) and shuffled_y.tolist() == y[order].tolist()
    with pytest.raises(ValueError, match="severities must lie in 1..5"):
        read_corruption("fog", tmp_path, severities=(6,))
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        read_corruption("rain", tmp_path)


def test_cifar10c_agrees_with_robustbench(tmp_path):
    from catrs_adapters.data.robustbench import import_robustbench_data

    try:
        robustbench_data = import_robustbench_data()
    except ImportError as error:
        pytest.skip(str(error))
    assert tuple(robustbench_data.CORRUPTIONS) == CORRUPTIONS
    _write_cifar10c(tmp_path, 3, ("fog", "snow"), np.random.default_rng(1))
    theirs = robustbench_data.load_cifar10c(4, severity=1, data_dir=str(tmp_path), corruptions=("fog", "snow"))
    ours = load_cifar10c(4, severity=1, data_dir=tmp_path, corruptions=("fog", "snow"))
    np.testing.assert_array_equal(ours[0], theirs[0].numpy())
    np.testing.assert_array_equal(ours[1], theirs[1].numpy())


def _write_idx(path, array, compress):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    # Closed by the with block: on Python 3.12+ an unclosed gzip file is left empty.
    with (gzip.open if compress else open)(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)
    suffix = ".gz" if compress else ""
    _write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels, compress)
    x, y = get_registry().dataset("mnist").load("test", data_dir=str(tmp_path), n_examples=4)
    assert x.shape == (4, 1, 28, 28) and x.dtype == np.float32
    if not compress:  # torchvision's own IDX reader as the independent check
        torch.testing.assert_close(torch.from_numpy(x[:, 0] * 255).round().to(torch.uint8),
                                   read_image_file(str(folder / "t10k-images-idx3-ubyte"))[:4])
        assert y.tolist() == read_label_file(str(folder / "t10k-labels-idx1-ubyte"))[:4].tolist()
    assert y.tolist() == labels[:4].tolist()


def _write_imagenet(root, names, rng):
    for index, name in enumerate(names):
        path = root / "val" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (300 + 7 * index, 260 + 11 * index)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format="JPEG")


def test_imagenet_validation_folders(tmp_path):
    from torchvision import datasets, transforms

    names = ["n02000000/ILSVRC2012_val_00000002.JPEG", "n01000000/ILSVRC2012_val_00000009.JPEG",
             "n01000000/ILSVRC2012_val_00000001.JPEG"]
    _write_imagenet(tmp_path, names, np.random.default_rng(0))
    x, y = get_registry().dataset("imagenet").load("test", data_dir=str(tmp_path))
    reference = datasets.ImageFolder(str(tmp_path / "val"), transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]))
    assert x.shape == (3, 3, 224, 224) and y.tolist() == [0, 0, 1]
    for row in range(3):
        np.testing.assert_array_equal(x[row], reference[row][0].numpy())
    first, _ = load_imagenet(1, data_dir=tmp_path, shuffle=True, seed=3)
    assert any(np.array_equal(first[0], image) for image in x)
    assert isinstance(x, ImageFolderArray)  # the registered loader decodes on access
    np.testing.assert_array_equal(x[np.array([2, 0])], np.asarray(x)[[2, 0]])


def test_certification_decodes_only_the_selected_images(tmp_path):
    names = [f"n01000000/ILSVRC2012_val_0000000{k}.JPEG" for k in range(4)]
    _write_imagenet(tmp_path, names, np.random.default_rng(1))
    x, y = get_registry().dataset("imagenet").load("test", data_dir=str(tmp_path))
    x.paths[1] = tmp_path / "deleted.JPEG"  # never decoded: example 1 is not selected

    class MeanColour(torch.nn.Module):
        def forward(self, batch):
            return batch.mean(dim=(2, 3))

    written = certify_to_file(MeanColour(), 3, 0.25, x, y, tmp_path / "out.tsv", indices=[0, 2, 3], n0=10, n=50,
                              progress=False)
    assert written == 3
    assert [line.split("\t")[0] for line in (tmp_path / "out.tsv").read_text().splitlines()[1:]] == ["0", "2", "3"]


def test_imagenet_robustbench_5000_list_agrees_with_robustbench(tmp_path):
    from catrs_adapters.data.robustbench import imagenet_5000_list, import_robustbench_data

    try:
        robustbench_data = import_robustbench_data()
    except ImportError as error:
        pytest.skip(str(error))
    listed = imagenet_5000_list()
    assert len(listed) == 5000
    for wnid in {name.split("/")[0] for name in listed}:
        (tmp_path / "val" / wnid).mkdir(parents=True, exist_ok=True)
    _write_imagenet(tmp_path, listed[:2], np.random.default_rng(1))
    ours = load_imagenet(2, data_dir=tmp_path, image_set="robustbench")
    theirs = robustbench_data.load_imagenet(2, data_dir=str(tmp_path))
    np.testing.assert_array_equal(ours[0], theirs[0].numpy())
    assert ours[1].tolist() == theirs[1].tolist()
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_val_"):
        get_registry().dataset("imagenet").load("test5000", data_dir=str(tmp_path), n_examples=3)
