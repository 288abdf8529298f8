"""PyTorchCATRS keeps ART's conventions: parameters, signatures, dtypes and shapes, and names under ``art.``.

Each check compares with ART's own class (``PyTorchRandomizedSmoothing``, or ``PyTorchClassifier``
where ART's randomized smoothing has no such method) on the same network and inputs. The table
in docs/guides/art.rst ("ART's conventions") lists what these tests keep true.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from art.defences.postprocessor import Rounded
from art.defences.preprocessor import GaussianAugmentation
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
from art.estimators.classification import PyTorchClassifier

from catrs_adapters.art.estimator import PyTorchCATRS
from catrs_plugin.backbones.digits import digits_cnn

SHAPE = (1, 8, 8)


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return digits_cnn(10, 1)


def ours(model: torch.nn.Module | None = None, **kwargs) -> PyTorchCATRS:
    model = network() if model is None else model
    settings = dict(optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), device_type="cpu",
                    clip_values=(0.0, 1.0), sample_size=50, scale=0.25)
    settings.update(kwargs)
    return PyTorchCATRS(model, torch.nn.CrossEntropyLoss(), SHAPE, 10, **settings)


#: A value other than the default for every constructor parameter that ``clone_for_refitting`` passes on
#: through ``set_params`` (it gives ``model``, ``loss``, ``input_shape`` and ``nb_classes`` to the
#: constructor and makes a new optimizer of the same type).
OTHER_VALUES = {
    "clip_values": (0.0, 2.0),
    "preprocessing_defences": GaussianAugmentation(sigma=0.1, augmentation=False),
    "postprocessing_defences": Rounded(decimals=2),
    "preprocessing": (0.5, 0.25),
    "device_type": "cpu",
    "sample_size": 64,
    "scale": 0.5,
    "alpha": 0.01,
    "method": "gaussian",
    "preset": "paper",
    "hyperparameters": {"lbd": 1.5},
    "seed": 7,
    "autocast_dtype": torch.bfloat16,
    "fast": True,
}
PASSED_TO_THE_CONSTRUCTOR = ("model", "loss", "input_shape", "nb_classes", "optimizer")

#: Parameters with one accepted value (``channels_first=False`` is refused: PyTorch models take (n, C, H, W)).
ONLY_ONE_VALUE = {"channels_first": True}


def _same(value, expected) -> bool:
    """``value`` as ART stores ``expected``: defences in lists, clip values as an array, preprocessing as a module."""
    if isinstance(expected, (GaussianAugmentation, Rounded)):
        return value == [expected]
    if isinstance(expected, tuple):
        if not isinstance(value, np.ndarray):  # ART's StandardisationMeanStdPyTorch
            value = (value.mean, value.std)
        return np.array_equal(np.asarray(value, dtype=float), np.asarray(expected, dtype=float))
    return value == expected


def test_every_constructor_parameter_is_an_estimator_parameter():
    parameters = set(inspect.signature(PyTorchCATRS.__init__).parameters) - {"self"}
    assert parameters <= set(PyTorchCATRS.estimator_params), parameters - set(PyTorchCATRS.estimator_params)
    assert set(PyTorchRandomizedSmoothing.estimator_params) <= set(PyTorchCATRS.estimator_params)
    # the round-trip test below has a value for each (a new constructor parameter needs one there)
    assert parameters == set(OTHER_VALUES) | set(PASSED_TO_THE_CONSTRUCTOR) | set(ONLY_ONE_VALUE)


@pytest.mark.parametrize("name", list(ONLY_ONE_VALUE))
def test_a_parameter_with_one_accepted_value_is_carried_and_checked_by_set_params(name):
    built = ours(**{name: ONLY_ONE_VALUE[name]})
    assert built.get_params()[name] == ONLY_ONE_VALUE[name]
    assert built.clone_for_refitting().get_params()[name] == ONLY_ONE_VALUE[name]
    with pytest.raises(ValueError, match=f"^{name}="):
        built.set_params(**{name: not ONLY_ONE_VALUE[name]})


@pytest.mark.parametrize("name", list(OTHER_VALUES))
def test_each_parameter_round_trips_through_get_params_set_params_and_clone_for_refitting(name):
    value = OTHER_VALUES[name]
    built = ours(**{name: value})
    assert _same(built.get_params()[name], value), built.get_params()[name]
    clone = built.clone_for_refitting()
    assert type(clone) is PyTorchCATRS and clone.model is not built.model
    assert _same(clone.get_params()[name], value), clone.get_params()[name]
    assert {key: repr(v) for key, v in clone.get_params().items() if key not in ("model", "optimizer")} == {
        key: repr(v) for key, v in built.get_params().items() if key not in ("model", "optimizer")}
    changed = ours()
    changed.set_params(**{name: value})
    assert _same(changed.get_params()[name], value), changed.get_params()[name]


def test_set_params_reaches_the_engine_and_checks_as_the_constructor_does():
    estimator = ours()
    estimator.set_params(fast=True, autocast_dtype=torch.float16, seed=5)
    engine = estimator.smooth()
    assert engine.fast and engine.seed == 5
    x = np.random.default_rng(0).random((3, *SHAPE), dtype=np.float32)
    estimator.set_params(fast=False, autocast_dtype=None)
    np.testing.assert_array_equal(estimator.certify(x, n=100)[1], ours(seed=5).certify(x, n=100)[1])
    hyperparameters = {"lbd": 2.0}
    estimator.set_params(hyperparameters=hyperparameters)
    hyperparameters["lbd"] = 3.0
    assert estimator.hyperparameters == {"lbd": 2.0}  # a copy, as the constructor keeps
    for bad, message in (({"fast": "yes"}, "fast must be True or False"),
                         ({"seed": -1}, "seed must be an integer >= 0"),
                         ({"autocast_dtype": torch.float64}, "autocast_dtype must be None, torch.bfloat16"),
                         ({"preset": "nope"}, "preset"),
                         ({"method": "nope"}, "unknown method 'nope'"),
                         ({"hyperparameters": {"nope": 1}}, "no hyper-parameter 'nope'"),
                         ({"sample_size": 0}, "sample_size must be an integer >= 1"),
                         ({"scale": -1.0}, "scale must be a finite number > 0")):
        with pytest.raises(ValueError, match=message):
            ours().set_params(**bad)
        with pytest.raises(ValueError, match=message):
            ours(**bad)


def _unwrapped(cls, name):
    """The function behind a method: ART's metaclass wraps ``fit`` and ``predict`` as ``(*args, **kwargs)``."""
    function = getattr(cls, name)
    for cell in function.__closure__ or ():
        if isinstance(cell.cell_contents, dict) and callable(cell.cell_contents.get(name)):
            return cell.cell_contents[name]
    return function


#: (method, argument): our default where it deliberately differs from ART's.
DEFAULTS_OF_OUR_OWN = {("certify", "batch_size"): None}  # sized from the free memory; results do not depend on it


@pytest.mark.parametrize("name", ["fit", "fit_generator", "predict", "certify", "loss_gradient", "class_gradient",
                                  "compute_loss", "get_activations"])
def test_methods_take_arts_arguments_in_arts_order_with_arts_defaults(name):
    theirs = inspect.signature(_unwrapped(PyTorchRandomizedSmoothing, name)).parameters
    mine = inspect.signature(_unwrapped(PyTorchCATRS, name)).parameters
    for (their_name, their), (my_name, my) in zip(theirs.items(), mine.items()):
        if their.kind is inspect.Parameter.VAR_KEYWORD:
            break
        assert my_name == their_name and my.kind == their.kind, (name, my_name, their_name)
        expected = DEFAULTS_OF_OUR_OWN.get((name, my_name), their.default)
        assert my.default == expected, (name, my_name)
    has_var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in theirs.values())
    assert has_var_keyword == any(p.kind is inspect.Parameter.VAR_KEYWORD for p in mine.values()), name


@pytest.fixture(scope="module")
def pair():
    """Our estimator and ART's on the same network (eval mode), and inputs and labels."""
    model = network().eval()
    x = np.random.default_rng(1).random((4, *SHAPE), dtype=np.float32)
    art = PyTorchRandomizedSmoothing(model, torch.nn.CrossEntropyLoss(), SHAPE, 10, device_type="cpu",
                                     clip_values=(0.0, 1.0), sample_size=50, scale=0.25)
    return ours(model), art, x, np.array([0, 3, 5, 9])


def _layout(value) -> tuple:
    return type(value).__name__, str(value.dtype), tuple(value.shape)


def test_predict_and_certify_return_arts_dtypes_and_shapes(pair):
    mine, art, x, _ = pair
    assert _layout(mine.predict(x)) == _layout(art.predict(x)) == ("ndarray", "float64", (4, 10))
    assert _layout(mine.predict(x, is_abstain=False)) == _layout(art.predict(x, is_abstain=False))
    for my_part, their_part in zip(mine.certify(x, n=60), art.certify(x, n=60)):
        assert _layout(my_part) == _layout(their_part)
    base = PyTorchClassifier(mine.model, torch.nn.CrossEntropyLoss(), SHAPE, 10, device_type="cpu")
    assert _layout(mine.predict(x, logits=True)) == _layout(base.predict(x))  # logits: float32, as ART's classifier


def test_gradients_losses_and_activations_have_arts_dtypes_and_shapes(pair):
    mine, art, x, y = pair
    one_hot = np.eye(10, dtype=np.float32)[y]
    base = PyTorchClassifier(mine.model, torch.nn.CrossEntropyLoss(), SHAPE, 10, device_type="cpu")
    assert _layout(mine.loss_gradient(x, one_hot)) == _layout(art.loss_gradient(x, one_hot, sampling=True))
    assert _layout(mine.loss_gradient(x, one_hot, sampling=False)) == _layout(art.loss_gradient(x, one_hot))
    # ART's randomized smoothing has no class_gradient (NotImplementedError): that of ART's classifier
    assert _layout(mine.class_gradient(x)) == _layout(base.class_gradient(x))
    assert _layout(mine.class_gradient(x, label=y)) == _layout(base.class_gradient(x, label=y))
    assert _layout(mine.class_gradient(x, label=3)) == _layout(base.class_gradient(x, label=3))
    for reduction in ("none", "mean", "sum"):
        assert _layout(mine.compute_loss(x, one_hot, reduction=reduction)) == _layout(
            art.compute_loss(x, one_hot, reduction=reduction)), reduction
    for layer in (0, 3, "5"):
        for framework in (False, True):
            activations = mine.get_activations(x, layer, batch_size=3, framework=framework)
            expected = art.get_activations(x, layer, batch_size=3, framework=framework)
            assert _layout(activations) == _layout(expected)
            torch.testing.assert_close(torch.as_tensor(activations), torch.as_tensor(expected))
    assert mine.get_activations(x, layer=2).shape == art.get_activations(x, layer=2).shape


NAMES_UNDER_ART = textwrap.dedent(
    """
    import json, sys
    out = {}
    for module_name, name in (("art.defences.trainer", "CATRSTrainer"),
                              ("art.estimators.certification.randomized_smoothing", "PyTorchCATRS")):
        module = __import__(module_name, fromlist=["_"])
        own = sorted(key for key in vars(module) if not key.startswith("_"))
        listed = dir(module)
        namespace = {}
        exec(f"from {module_name} import *", namespace)
        star = sorted(key for key in namespace if key != "__builtins__")
        out[module_name] = {"in_dir": name in listed, "own_in_dir": set(own) <= set(listed),
                            "star": sorted(set(star) - set(own)), "star_keeps_art": set(own) <= set(star),
                            "same_object": namespace[name] is getattr(module, name),
                            "defined_by": namespace[name].__module__}
    print(json.dumps(out))
    """
)


def test_our_names_under_art_are_in_dir_and_in_star_imports_like_arts_own():
    done = subprocess.run([sys.executable, "-c", NAMES_UNDER_ART], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out == {
        "art.defences.trainer": {"in_dir": True, "own_in_dir": True, "star": ["CATRSTrainer"], "star_keeps_art": True,
                                 "same_object": True, "defined_by": "catrs_adapters.art.trainer"},
        "art.estimators.certification.randomized_smoothing": {
            "in_dir": True, "own_in_dir": True, "star": ["PyTorchCATRS"], "star_keeps_art": True,
            "same_object": True, "defined_by": "catrs_adapters.art.estimator"},
    }
