"""Every purpose draws from its own noise streams: certification never reuses the noise a model trained on,
and outputs of another version of the seed derivation are refused, never continued."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from catrs_plugin.certify.distributed import merge_shards
from catrs_plugin.certify.files import certify_to_file
from catrs_plugin.certify.streams import (
    ESTIMATION,
    NOISE_BLOCK,
    PHASE_DOMAINS,
    PREDICTION,
    SELECTION,
    noise_generator,
)
from catrs_plugin.methods.base import Method
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.checkpoint import read_checkpoint, save_checkpoint
from catrs_plugin.train.data_schedule import epoch_order
from catrs_plugin.train.loop import TensorData, TrainConfig, train
from catrs_plugin.utils import provenance, streams
from catrs_plugin.utils.provenance import ProvenanceError
from catrs_plugin.utils.streams import derive_seed

EPOCHS, INDICES, SEED = 12, 300, 0


def recorded_training_noise(x, y, epochs, seed):
    """The first training-noise sample the loop hands a method in each epoch (one batch per epoch)."""
    seen = []

    def loss(model, batch):
        if len(seen) == batch.epoch:
            seen.append(batch.gaussian(1)[0, 0].flatten().clone())
        return model(batch.inputs).sum() * 0.0

    method = Method(name="record", paper="-", loss=loss, defaults={})
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits")
    train(model, method, {}, 1.0, TensorData(x, y), TrainConfig(epochs=epochs, batch_size=len(x), seed=seed,
                                                                 progress=False))
    return torch.stack(seen)


def first_certification_samples(index, shape):
    """The first noise sample of each of Smooth's phases for example ``index``, as Smooth draws it."""
    block = torch.empty((NOISE_BLOCK, *shape))
    return torch.stack([block.normal_(generator=noise_generator(SEED, index, phase))[0].flatten().clone()
                        for phase in PHASE_DOMAINS])


def test_training_noise_is_never_certification_noise_for_any_epoch_and_index(digits):
    """Version 1 seeded training noise of epoch e and CERTIFY's estimation noise of example e alike."""
    x, y = digits[0][:4], digits[1][:4]
    training = recorded_training_noise(x, y, EPOCHS, SEED)
    certification = torch.stack([first_certification_samples(i, x.shape[1:]) for i in range(INDICES)])
    same = (certification.reshape(-1, 1, training.shape[1]) == training.reshape(1, EPOCHS, -1)).all(dim=-1)
    assert not same.any(), f"{int(same.sum())} (index, phase, epoch) triples share their noise"
    assert not torch.equal(training[0], training[1])  # and epochs draw fresh noise


def test_every_training_stream_is_apart_from_every_certification_stream():
    training = {derive_seed(domain, SEED, e, *rest) for e in range(EPOCHS) for domain, rest in
                [(streams.EPOCH_ORDER, ()), (streams.TRAINING_NOISE, ()),
                 *[(streams.TRAINING_NOISE, (rank,)) for rank in range(4)],
                 *[(streams.AUGMENTATION, (batch,)) for batch in range(20)],
                 *[(streams.LOADER_AUGMENTATION, (index,)) for index in range(INDICES)]]}
    training |= {derive_seed(streams.SOFT_LABEL_VIEWS, SEED, batch) for batch in range(INDICES)}
    certification = {derive_seed(domain, SEED, index) for domain in PHASE_DOMAINS.values() for index in range(INDICES)}
    assert len(certification) == len(PHASE_DOMAINS) * INDICES
    assert not training & certification
    # The same order of examples for the in-memory data and for the loader's sampler.
    assert torch.equal(epoch_order(50, SEED, 3), torch.randperm(50, generator=streams.generator(streams.EPOCH_ORDER,
                                                                                                  SEED, 3)))


def test_domains_and_keys_never_alias():
    assert len(set(streams.DOMAINS)) == len(streams.DOMAINS)
    assert len({derive_seed(domain, SEED, 7) for domain in streams.DOMAINS}) == len(streams.DOMAINS)
    domain = streams.TRAINING_NOISE
    assert derive_seed(domain, 1, 2) != derive_seed(domain, 1, 2, 0)  # trailing zeros are not padding
    assert derive_seed(domain, 1) != derive_seed(domain, 1, 0, 0)
    assert derive_seed(domain, 2**32 + 5) != derive_seed(domain, 5, 1)  # a key is never re-cut into two
    assert derive_seed(domain, 3, 4) == derive_seed(domain, np.int64(3), np.uint8(4))
    assert 0 <= derive_seed(domain, 2**64 - 1) < 2**63
    for keys in [(-1,), (2**64,), (1.0,), (True,)]:
        with pytest.raises(ValueError, match=r"keys of stream 'training noise' must be integers in \[0, 2\*\*64\)"):
            derive_seed(domain, *keys)
    for bad in (0, "", None):
        with pytest.raises(ValueError, match="domain must be a non-empty string"):
            derive_seed(bad, 1)
    with pytest.raises(ValueError, match=r"phase must be one of \[0, 1, 2, 3\]"):
        noise_generator(0, 1, 7)
    assert {SELECTION, ESTIMATION, PREDICTION} <= set(PHASE_DOMAINS)


def unversioned(path):
    """Rewrite the sidecar record of ``path`` as the first, unversioned scheme wrote it."""
    record = provenance.read_record(path)
    del record[provenance.STREAMS_SETTING]
    provenance.sidecar(path).write_text(json.dumps(record))


def test_outputs_of_the_unversioned_scheme_are_refused(linear_two_class, digits, tmp_path):
    model = linear_two_class(torch.tensor([1.0, -1.0]), 0.0)
    x = np.random.default_rng(0).random((4, 2)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    out = tmp_path / "r.tsv"
    certify_to_file(model, 2, 0.5, x, y, out, n0=10, n=50, progress=False)
    assert provenance.read_record(out)[provenance.STREAMS_SETTING] == streams.SCHEME
    unversioned(out)
    with pytest.raises(ProvenanceError, match=r"under version 1 of the noise-stream seeds, this is version 2"):
        certify_to_file(model, 2, 0.5, x, y, out, n0=10, n=50, progress=False)

    shard = tmp_path / "s.tsv.rank0"
    certify_to_file(model, 2, 0.5, x, y, shard, n0=10, n=50, progress=False)
    unversioned(shard)
    with pytest.raises(ProvenanceError, match=r"shard .* under version 1"):
        merge_shards(tmp_path / "s.tsv", [shard])

    checkpoint = tmp_path / "c.pt"
    method = get_registry().method("gaussian")

    def run(epochs):
        torch.manual_seed(0)
        model = get_registry().create_model("digits_cnn", "digits")
        train(model, method, {}, 0.25, TensorData(digits[0][:32], digits[1][:32]),
              TrainConfig(epochs=epochs, batch_size=32, checkpoint=str(checkpoint), progress=False))

    run(1)
    payload = read_checkpoint(checkpoint)
    assert payload["provenance"][provenance.STREAMS_SETTING] == streams.SCHEME
    del payload["provenance"][provenance.STREAMS_SETTING]
    save_checkpoint(checkpoint, payload)
    with pytest.raises(ProvenanceError, match=r"checkpoint .* under version 1 of the noise-stream seeds"):
        run(2)
