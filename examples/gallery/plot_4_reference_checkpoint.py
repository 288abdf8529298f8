"""
Load a reference checkpoint
===========================

The training scripts of Cohen et al. and of the CAT-RS repository save
``{'epoch', 'arch', 'state_dict', 'optimizer'}`` with ``torch.save``, where
``state_dict`` is that of ``Sequential(NormalizeLayer, network)``: the normalisation is
the model's first layer and keeps its statistics out of the state dict, so the network's
keys start with ``1.``. :func:`~catrs_plugin.train.checkpoint.load_checkpoint` rebuilds
such a model, normalisation included, in eval mode, reading the file with
``weights_only=True``.

To stay small, this example writes a file in that format itself, for the digits CNN, as
the reference's ``train.py`` would after three epochs.
"""

import tempfile
from pathlib import Path

import numpy as np
import torch
from catrs_adapters.datasets import DIGITS, load_digits
from torch import nn

from catrs_plugin.backbones.digits import digits_cnn
from catrs_plugin.backbones.normalize import NormalizeLayer

x_train, y_train = load_digits("train")
x, y = torch.as_tensor(x_train), torch.as_tensor(y_train)
torch.manual_seed(0)
normalize = NormalizeLayer(DIGITS.mean, DIGITS.std)
model = nn.Sequential(normalize, digits_cnn(num_classes=10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
for epoch in range(3):  # Gaussian augmentation, as the reference's train.py
    for batch in torch.randperm(len(x)).split(64):
        noisy = x[batch] + 0.25 * torch.randn_like(x[batch])
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(noisy), y[batch]).backward()
        optimizer.step()

workdir = tempfile.TemporaryDirectory()
path = Path(workdir.name) / "checkpoint.pth.tar"
torch.save({"epoch": 3, "arch": "digits_cnn", "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict()}, path)
print(list(torch.load(path, weights_only=True)), list(model.state_dict())[:2])

# %%
# Load it
# -------
# The file does not record its dataset. For the reference architectures the loader knows
# the reference pairing (``cifar_resnet110`` with CIFAR-10, ``resnet50`` with ImageNet,
# ...: :data:`~catrs_plugin.train.checkpoint.REFERENCE_DATASETS`); otherwise pass
# ``dataset``, as the reference ``certify.py`` takes it on its command line.

from catrs_plugin import Smooth, load_checkpoint

loaded = load_checkpoint(path, dataset="digits")
print(loaded)
x_test, y_test = load_digits("test", n_examples=50)
inputs = torch.as_tensor(x_test)
with torch.no_grad():
    same = torch.equal(loaded(inputs), model.eval()(inputs))
print(f"the same logits as the model that was saved: {same}")

# %%
# Certify it
# ----------
# ``catrs certify digits checkpoint.pth.tar 0.25 out.tsv`` does the same from the command
# line, with the arguments of the reference ``certify.py``.

smooth = Smooth(loaded, num_classes=10, sigma=0.25, seed=0)
predictions, radii = smooth.certify(x_test, n0=100, n=1000, alpha=0.001)
accuracy = np.mean((predictions == y_test) & (radii >= 0.25))
print(f"certified accuracy at radius 0.25: {accuracy:.0%}")
workdir.cleanup()
