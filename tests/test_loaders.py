"""Data-set readers on tiny files written in each data set's real on-disk format."""

import gzip
import inspect
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets, transforms

from catrs_adapters.data import (
    CORRUPTIONS,
    load_cifar10,
    load_cifar10c,
    load_cifar100c,
    load_imagenet,
    load_imagenetc,
    load_mnist,
    read_cifar10,
    read_corruption,
    read_imagenet,
)
from catrs_adapters.data.imagenet import ImageFolderArray
from catrs_plugin.certify.files import certify_to_file
from catrs_plugin.plugins.registry import get_registry


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
    x, y = read_cifar10(data_dir=tmp_path)
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


def _write_cifar10c(root, per_severity, corruptions, rng, dataset="CIFAR-10-C", classes=10):
    folder = root / dataset
    folder.mkdir(parents=True)
    labels = np.tile(rng.integers(0, classes, per_severity), 5).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    images = {c: rng.integers(0, 256, (5 * per_severity, 32, 32, 3), dtype=np.uint8) for c in corruptions}
    for corruption, array in images.items():
        np.save(folder / f"{corruption}.npy", array)
    return labels, images


class UncheckedCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader without its md5 check of the real files (our files are tiny)."""

    def _check_integrity(self):
        return True

    def _load_meta(self):
        self.classes = [str(label) for label in range(10)]


def test_load_cifar10_is_robustbenchs_drop_in(tmp_path):
    _, labels = _write_cifar10(tmp_path, np.random.default_rng(0))
    x, y = load_cifar10(2, data_dir=tmp_path)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (2, 3, 32, 32)
    assert y.dtype == torch.int64 and y.tolist() == labels["test_batch"][:2]
    reference = UncheckedCIFAR10(str(tmp_path), train=False, transform=transforms.ToTensor())
    torch.testing.assert_close(x, torch.stack([reference[i][0] for i in range(2)]), rtol=0, atol=0)
    grey = transforms.Compose([transforms.Grayscale(), transforms.ToTensor()])
    x_grey, _ = load_cifar10(data_dir=tmp_path, transforms_test=grey)  # applied to PIL images, as torchvision does
    reference = UncheckedCIFAR10(str(tmp_path), train=False, transform=grey)
    torch.testing.assert_close(x_grey, torch.stack([reference[i][0] for i in range(3)]), rtol=0, atol=0)
    assert torch.equal(load_cifar10(data_dir=tmp_path, transforms_test=transforms.ToTensor())[0], load_cifar10(
        data_dir=tmp_path)[0])  # the vectorised default scales exactly as ToTensor


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
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and y.dtype == torch.uint8  # labels.npy's dtype
    np.testing.assert_allclose(x.numpy(), expected.transpose(0, 3, 1, 2) / 255.0, rtol=0, atol=1e-7)
    x, y = load_cifar10c(6, severity=3, data_dir=tmp_path, corruptions=("fog", "snow"))
    np.random.seed(5)
    shuffled_x, shuffled_y = load_cifar10c(6, severity=3, data_dir=tmp_path, corruptions=("fog", "snow"), shuffle=True)
    order = [next(i for i in range(6) if torch.equal(x[i], image)) for image in shuffled_x]
    np.random.seed(5)
    assert order == np.random.permutation(np.arange(6)).tolist()  # numpy's global state, as RobustBench
    assert order != list(range(6)) and shuffled_y.tolist() == y[order].tolist()
    with pytest.raises(ValueError, match="severity must lie in 1..5, got 0"):
        load_cifar10c(2, severity=0, data_dir=tmp_path, corruptions=("fog",))
    with pytest.raises(ValueError, match="severities must lie in 1..5"):
        read_corruption("fog", tmp_path, severities=(6,))
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        read_corruption("rain", tmp_path)


def test_load_cifar100c_reads_cifar_100_c_as_robustbench_selects_it(tmp_path):
    labels, images = _write_cifar10c(tmp_path, 4, ("fog", "snow"), np.random.default_rng(3), "CIFAR-100-C", 100)
    _write_cifar10c(tmp_path, 4, ("fog", "snow"), np.random.default_rng(4))  # CIFAR-10-C beside it: not read
    x, y = load_cifar100c(5, 2, tmp_path, False, ("fog", "snow"))
    expected = np.concatenate([images["fog"][4:7], images["snow"][4:6]])  # severity 2, ceil(5 / 2) = 3 each
    np.testing.assert_allclose(x.numpy(), expected.transpose(0, 3, 1, 2) / 255.0, rtol=0, atol=1e-7)
    assert y.dtype == torch.uint8 and y.tolist() == [*labels[:3], *labels[:2]]
    assert x.dtype == torch.float32 and x.shape == (5, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100-C/pixelate\.npy.*zenodo\.org/records/3555552"):
        load_cifar100c(2, data_dir=tmp_path, corruptions=("pixelate",))


@pytest.mark.parametrize("name,dataset,classes", [("load_cifar10c", "CIFAR-10-C", 10),
                                                  ("load_cifar100c", "CIFAR-100-C", 100)])
def test_corrupted_cifar_agrees_with_robustbench(tmp_path, name, dataset, classes):
    robustbench_data = _robustbench_or_skip()
    assert tuple(robustbench_data.CORRUPTIONS) == CORRUPTIONS
    _write_cifar10c(tmp_path, 3, ("fog", "snow"), np.random.default_rng(1), dataset, classes)
    import catrs_adapters.data as ours

    for shuffle in (False, True):
        np.random.seed(2)
        theirs = getattr(robustbench_data, name)(4, 1, str(tmp_path), shuffle, ("fog", "snow"))
        np.random.seed(2)
        mine = getattr(ours, name)(4, 1, tmp_path, shuffle, ("fog", "snow"))
        for my_part, their_part in zip(mine, theirs):
            assert my_part.dtype == their_part.dtype and torch.equal(my_part, their_part)


def _robustbench_or_skip():
    from catrs_adapters.data.robustbench import import_robustbench_data

    try:
        return import_robustbench_data()
    except ImportError as error:
        pytest.skip(str(error))


#: RobustBench 1.1.1's drop-in loaders (robustbench/data.py): parameter names and their plain defaults.
ROBUSTBENCH_SIGNATURES = {
    "load_cifar10": [("n_examples", None), ("data_dir", "./data"), ("transforms_test", "transform")],
    "load_cifar100": [("n_examples", None), ("data_dir", "./data"), ("transforms_test", "transform")],
    "load_cifar10c": [("n_examples", inspect.Parameter.empty), ("severity", 5), ("data_dir", "./data"),
                      ("shuffle", False), ("corruptions", CORRUPTIONS), ("_", "transform")],
    "load_cifar100c": [("n_examples", inspect.Parameter.empty), ("severity", 5), ("data_dir", "./data"),
                       ("shuffle", False), ("corruptions", CORRUPTIONS), ("_", "transform")],
    "load_imagenet": [("n_examples", 5000), ("data_dir", "./data"), ("transforms_test", "transform")],
    "load_imagenetc": [("n_examples", 5000), ("severity", 5), ("data_dir", "./data"), ("shuffle", False),
                       ("corruptions", CORRUPTIONS), ("prepr", "transform")],
}


@pytest.mark.parametrize("name", list(ROBUSTBENCH_SIGNATURES))
def test_drop_ins_have_robustbench_1_1_1s_parameter_names_and_defaults(name):
    import catrs_adapters.data as ours

    parameters = inspect.signature(getattr(ours, name)).parameters
    assert [parameter for parameter in parameters] == [entry[0] for entry in ROBUSTBENCH_SIGNATURES[name]]
    for (_, default), parameter in zip(ROBUSTBENCH_SIGNATURES[name], parameters.values()):
        assert callable(parameter.default) if default == "transform" else parameter.default == default


@pytest.mark.parametrize("name", list(ROBUSTBENCH_SIGNATURES))
def test_drop_ins_take_robustbenchs_arguments_and_defaults(name):
    import catrs_adapters.data as ours

    robustbench_data = _robustbench_or_skip()
    mine = inspect.signature(getattr(ours, name)).parameters
    theirs = inspect.signature(getattr(robustbench_data, name)).parameters
    assert list(mine) == list(theirs)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8))
    for my_parameter, their_parameter in zip(mine.values(), theirs.values()):
        default, their_default = my_parameter.default, their_parameter.default
        if their_default is not inspect.Parameter.empty and callable(their_default):  # a transform: same images
            torch.testing.assert_close(default(image), their_default(image), rtol=0, atol=0)
        else:
            assert default == their_default


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
    names = ["n02000000/ILSVRC2012_val_00000002.JPEG", "n01000000/ILSVRC2012_val_00000009.JPEG",
             "n01000000/ILSVRC2012_val_00000001.JPEG"]
    _write_imagenet(tmp_path, names, np.random.default_rng(0))
    x, y = get_registry().dataset("imagenet").load("test", data_dir=str(tmp_path))
    reference = datasets.ImageFolder(str(tmp_path / "val"), transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]))
    assert x.shape == (3, 3, 224, 224) and y.tolist() == [0, 0, 1]
    for row in range(3):
        np.testing.assert_array_equal(x[row], reference[row][0].numpy())
    first, _ = read_imagenet(1, data_dir=tmp_path, shuffle=True, seed=3)
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
    ours = read_imagenet(2, data_dir=tmp_path, image_set="robustbench")
    theirs = robustbench_data.load_imagenet(2, data_dir=str(tmp_path))
    np.testing.assert_array_equal(ours[0], theirs[0].numpy())
    assert ours[1].tolist() == theirs[1].tolist()
    drop_in = load_imagenet(2, data_dir=tmp_path)
    for mine, their in zip(drop_in, theirs):
        assert mine.dtype == their.dtype and torch.equal(mine, their)
    grey = transforms.Compose([transforms.Resize(64), transforms.CenterCrop(56), transforms.Grayscale(),
                               transforms.ToTensor()])
    assert torch.equal(load_imagenet(2, str(tmp_path), grey)[0], robustbench_data.load_imagenet(2, str(tmp_path),
                                                                                                grey)[0])
    with pytest.raises(ValueError, match="n_examples must be an integer in 1..5000"):
        load_imagenet(5001, data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_val_"):
        get_registry().dataset("imagenet").load("test5000", data_dir=str(tmp_path), n_examples=3)


def _write_imagenetc(root, names, rng, corruption="fog", severity=3, size=(24, 24)):
    """ImageNet-C's layout: ImageNet-C/<corruption>/<severity>/<wnid>/<file> (small JPEGs: the format, not the size)."""
    folder = root / "ImageNet-C" / corruption / str(severity)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, format="JPEG")
    return folder


def test_load_imagenetc_reads_robustbenchs_images_of_one_corruption_and_severity(tmp_path, monkeypatch):
    import catrs_adapters.data.robustbench as robustbench_adapter

    listed = ["n02000000/ILSVRC2012_val_00000007.JPEG", "n01000000/ILSVRC2012_val_00000003.JPEG",
              "n03000000/ILSVRC2012_val_00000001.JPEG", "n01000000/ILSVRC2012_val_00000002.JPEG"]
    monkeypatch.setattr(robustbench_adapter, "imagenet_5000_list", lambda: listed)  # RobustBench's list, shortened
    folder = _write_imagenetc(tmp_path, listed, np.random.default_rng(0))
    _write_imagenetc(tmp_path, listed, np.random.default_rng(1), severity=5)  # another severity: not read
    x, y = load_imagenetc(3, 3, tmp_path, False, ("fog",))
    reference = datasets.ImageFolder(str(folder), transforms.ToTensor())  # the same class indices
    by_path = {Path(path): index for index, (path, _) in enumerate(reference.samples)}
    expected = [reference[by_path[folder / name]] for name in listed[:3]]  # RobustBench's order, not the folders'
    assert x.dtype == torch.float32 and x.shape == (3, 3, 24, 24) and y.dtype == torch.int64
    torch.testing.assert_close(x, torch.stack([image for image, _ in expected]), rtol=0, atol=0)
    assert y.tolist() == [label for _, label in expected] == [1, 0, 2]
    torch.manual_seed(7)
    shuffled_x, shuffled_y = load_imagenetc(2, 3, tmp_path, True, ("fog",))
    torch.manual_seed(7)  # RobustBench's DataLoader(batch_size=n_examples, shuffle=True) over its list
    order = next(iter(torch.utils.data.DataLoader(range(4), batch_size=2, shuffle=True))).tolist()
    torch.testing.assert_close(shuffled_x, torch.stack([reference[by_path[folder / listed[i]]][0] for i in order]))
    assert shuffled_y.tolist() == [reference[by_path[folder / listed[i]]][1] for i in order]
    grey = transforms.Compose([transforms.Grayscale(), transforms.ToTensor()])
    assert load_imagenetc(1, 3, tmp_path, False, ("fog",), grey)[0].shape == (1, 1, 24, 24)  # prepr is applied
    assert load_imagenetc(None, 3, tmp_path, corruptions=("fog",))[0].shape[0] == 4
    for bad, message in (({"corruptions": ("fog", "snow")}, "corruptions must name exactly one corruption"),
                         ({"severity": 6}, "severity must lie in 1..5"),
                         ({"n_examples": 5001}, "n_examples must be an integer in 1..5000")):
        with pytest.raises(ValueError, match=message):
            load_imagenetc(**{"data_dir": tmp_path, "corruptions": ("fog",), **bad})
    with pytest.raises(FileNotFoundError, match=r"ImageNet-C/snow/3'? does not exist.*zenodo\.org/records/2235448"):
        load_imagenetc(2, 3, tmp_path, False, ("snow",))


def test_load_imagenetc_agrees_with_robustbench(tmp_path):
    robustbench_data = _robustbench_or_skip()
    from catrs_adapters.data.robustbench import imagenet_5000_list

    folder = _write_imagenetc(tmp_path, imagenet_5000_list(), np.random.default_rng(2), size=(8, 8))
    assert len(list(folder.iterdir())) > 900  # class folders of RobustBench's 5,000 images
    for shuffle in (False, True):
        torch.manual_seed(3)
        theirs = robustbench_data.load_imagenetc(3, 3, str(tmp_path), shuffle, ("fog",))
        torch.manual_seed(3)
        mine = load_imagenetc(3, 3, tmp_path, shuffle, ("fog",))
        for my_part, their_part in zip(mine, theirs):
            assert my_part.dtype == their_part.dtype and torch.equal(my_part, their_part)
