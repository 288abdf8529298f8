"""torch.distributed: DDP training and sharded certification with 2 gloo processes on the CPU.

The multi-process tests launch real ``torchrun`` (``python -m torch.distributed.run``) jobs.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from catrs_plugin.certify import distributed
from catrs_plugin.certify.distributed import find_shards, merge_shards, shard_path
from catrs_plugin.cli import main
from catrs_plugin.results.tsv import CERTIFY_HEADER
from catrs_plugin.train.loop import TensorData
from catrs_plugin.utils import provenance
from catrs_plugin.utils.provenance import ProvenanceError

HEADER = "\t".join(CERTIFY_HEADER)


def torchrun(*args, timeout=120):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _write(path, *rows, settings=None):
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    provenance.write_record(path, settings or {"model": "m", "sigma": 0.25})


def test_merge_orders_rows_and_checks_them(tmp_path):
    out = tmp_path / "out.tsv"
    _write(shard_path(out, 0), "0\t1\t1\t0.5\t1\t0:00:01", "4\t2\t-1\t0.0\t0\t0:00:01")
    _write(shard_path(out, 1), "1\t3\t3\t0.25\t1\t0:00:02", "0\t1\t1\t0.5\t1\t0:00:09")  # 0 again, other time
    with open(shard_path(out, 1), "a") as handle:
        handle.write("5\t2\t")  # a row cut short by a killed rank
    assert find_shards(out) == [shard_path(out, 0), shard_path(out, 1)]
    assert merge_shards(out) == 3
    assert [line.split("\t")[0] for line in out.read_text().splitlines()] == ["idx", "0", "1", "4"]
    assert merge_shards(out, expected=[4, 1, 0]) == 3
    assert [line.split("\t")[0] for line in out.read_text().splitlines()[1:]] == ["4", "1", "0"]
    with pytest.raises(ValueError, match="lack 1 of 4 selected examples"):
        merge_shards(out, expected=[0, 1, 4, 5])
    _write(shard_path(out, 2), "1\t3\t0\t0.1\t0\t0:00:02")
    with pytest.raises(ValueError, match="example 1 has rows that differ"):
        merge_shards(out)
    shard_path(out, 2).write_text("idx\tlabel\tpredict\tcorrect\ttime\n")
    with pytest.raises(ValueError, match="header"):
        merge_shards(out)
    with pytest.raises(FileNotFoundError, match="no shard files"):
        merge_shards(tmp_path / "other.tsv")


def test_merge_refuses_shards_of_other_runs_and_records_the_merged_file(tmp_path):
    out = tmp_path / "out.tsv"
    _write(shard_path(out, 0), "0\t1\t1\t0.5\t1\t0:00:01")
    _write(shard_path(out, 1), "1\t3\t3\t0.25\t1\t0:00:02")
    assert merge_shards(out) == 2
    assert provenance.read_record(out) == provenance.read_record(shard_path(out, 0))
    _write(shard_path(out, 1), "1\t3\t3\t0.25\t1\t0:00:02", settings={"model": "m", "sigma": 0.5})
    with pytest.raises(ProvenanceError, match=r"out.tsv.rank1' comes from another run than .*rank0' "
                                              r"\(sigma 0.25 in the first shard, 0.5 in this one\)"):
        merge_shards(out)
    provenance.sidecar(shard_path(out, 1)).unlink()
    with pytest.raises(ProvenanceError, match="rank1' exists but nothing records which run produced it"):
        merge_shards(out)


def test_rank_zero_merges_or_says_how_to_when_a_shard_is_elsewhere(tmp_path, monkeypatch):
    """Rank 0 of two (the process group faked): merges when it sees both shards, else explains."""
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (0, 2))
    monkeypatch.setattr(distributed.dist, "barrier", lambda: None)
    out = tmp_path / "out.tsv"
    with pytest.warns(RuntimeWarning, match=r"out.tsv.rank1 not visible.*catrs merge-shards"):
        with distributed.sharded_output(out, [0, 1, 2]) as (path, mine):
            assert path == shard_path(out, 0) and mine.tolist() == [0, 2]
            _write(path, "0\t1\t1\t0.5\t1\t0:00:01", "2\t2\t2\t0.7\t1\t0:00:01")
    assert not out.exists()
    _write(shard_path(out, 1), "1\t3\t3\t0.25\t1\t0:00:02")
    with distributed.sharded_output(out, [0, 1, 2]):
        pass
    assert [line.split("\t")[0] for line in out.read_text().splitlines()] == ["idx", "0", "1", "2"]


def test_ranks_split_every_loader_batch_evenly():
    data = TensorData(np.zeros((23, 1, 2, 2), np.float32), np.arange(23))
    whole = [y.tolist() for _, y, _ in data.batches(3, 10, 0, torch.device("cpu"))]
    shares = [[y.tolist() for _, y, _ in data.batches(3, 10, 0, torch.device("cpu"), rank, 2)] for rank in (0, 1)]
    assert [len(b) for b in whole] == [10, 10, 3]
    for batch, first, second in zip(whole, *shares):
        half = len(batch) // 2
        assert first == batch[:half] and second == batch[half : 2 * half]


WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch, torch.nn.functional as F
    from catrs_adapters.datasets import load_digits
    from catrs_plugin.certify.distributed import init_from_env, rank_and_world
    from catrs_plugin.methods.base import DataSchedule, Method
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.train.loop import TensorData, TrainConfig, train

    out = sys.argv[1]
    init_from_env(torch.device("cpu"))
    rank, world = rank_and_world()
    x, y = load_digits("train")
    x, y = x[:200], y[:200]
    soft = np.random.default_rng(0).dirichlet(np.ones(10), size=200).astype(np.float32)
    clean = Method("clean", "-", lambda model, batch: F.cross_entropy(model(batch.inputs), batch.targets), {})
    seen = []

    def one_class(view, current):  # each rank's own answer: the examples of the class numbered like the rank
        return DataSchedule(np.flatnonzero(y == rank), draws=40)

    def recorded(model, batch):
        seen.extend(batch.targets.tolist())
        return F.cross_entropy(model(batch.inputs), batch.targets)

    registry = get_registry()
    tiny = {"discard_epoch": 1, "discard_threshold": 0.3, "discard_samples": 20, "attack_steps": 1,
            "reweight_every": 1}
    runs = [("clean", clean, {}), ("gaussian", registry.method("gaussian"), {}),
            ("catrs", registry.method("catrs"), {"num_steps": 1}), ("sun2025", registry.method("sun2025"), tiny),
            ("ranked", Method("ranked", "-", recorded, {}, schedule=one_class), {})]
    for name, method, hp in runs:
        torch.manual_seed(0)
        model = registry.create_model("digits_cnn", "digits")
        config = TrainConfig(epochs=2, batch_size=50, lr=0.1, progress=False, checkpoint=f"{out}/{name}.w{world}.pt")
        history = train(model, method, method.hyperparameters(**hp), 0.25, TensorData(x, y, soft), config)
        torch.save(model.state_dict(), f"{out}/{name}.w{world}.r{rank}.pt")
        with open(f"{out}/{name}.w{world}.r{rank}.json", "w") as handle:
            json.dump(history, handle)
    with open(f"{out}/seen.w{world}.r{rank}.json", "w") as handle:
        json.dump(seen, handle)
    """
)


def test_ddp_training_with_two_gloo_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    torchrun(str(script), str(tmp_path))
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=120)
    load = lambda name: torch.load(tmp_path / name, weights_only=True)  # noqa: E731
    for name in ("clean", "gaussian", "catrs", "sun2025", "ranked"):
        rank0, rank1 = load(f"{name}.w2.r0.pt"), load(f"{name}.w2.r1.pt")
        single = load(f"{name}.w1.r0.pt")
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), (name, key)  # DDP keeps the replicas identical
        losses = [[h["loss"] for h in json.loads((tmp_path / f"{name}.w2.r{r}.json").read_text())] for r in (0, 1)]
        assert losses[0] == losses[1]  # the epoch loss is averaged over both ranks
        checkpoint = load(f"{name}.w2.pt")  # written by rank 0 only, with the unwrapped keys
        assert set(checkpoint["state_dict"]) == set(single)
        if name == "clean":
            # Without noise, averaging the gradients of two half batches is the full-batch step.
            for key in single:
                torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5)
        elif name != "ranked":
            assert any(not torch.equal(rank0[key], single[key]) for key in single)  # each rank draws its own noise
    assert len(load("sun2025.w2.pt")["data_schedule"]["indices"]) < 200  # it discarded under DDP too
    # Each rank's schedule hook answered its own class; every rank trained on rank 0's answer.
    for rank in (0, 1):
        assert set(json.loads((tmp_path / f"seen.w2.r{rank}.json").read_text())) == {0}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "gaussian.pt"
    assert main(["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--epochs", "2",
                 "--batch", "64", "--checkpoint", str(path), "--quiet", "--device", "cpu"]) == 0
    return path


def _without_time(path):
    return [line.rsplit("\t", 1)[0] for line in path.read_text().splitlines()]


def test_sharded_certify_equals_a_single_process_run(checkpoint, tmp_path):
    arguments = ["certify", "digits", str(checkpoint), "0.25", "--N0", "50", "--N", "700", "--batch", "300",
                 "--max", "25", "--skip", "2", "--seed", "5", "--device", "cpu", "--quiet"]
    single, merged = tmp_path / "single.tsv", tmp_path / "merged.tsv"
    assert main(arguments[:4] + [str(single)] + arguments[4:]) == 0
    # "--" keeps torchrun from reading our "--max" as an abbreviation of its own "--max-restarts".
    torchrun("-m", "catrs_plugin.cli", "--", *arguments[:4], str(merged), *arguments[4:])
    shards = [_without_time(shard_path(merged, rank)) for rank in (0, 1)]
    assert [row.split("\t")[0] for row in shards[0][1:]] == ["0", "4", "8", "12", "16", "20", "24"]
    assert [row.split("\t")[0] for row in shards[1][1:]] == ["2", "6", "10", "14", "18", "22"]
    assert _without_time(merged) == _without_time(single)
    assert len(_without_time(single)) == 14
    assert main(["merge-shards", str(tmp_path / "again.tsv"), "--shards", *map(str, find_shards(merged))]) == 0
    assert _without_time(tmp_path / "again.tsv") == _without_time(single)
