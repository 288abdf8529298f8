"""Config files: every sub-command writes its settings and takes them back with ``--config FILE``."""

import json

import pytest

from catrs_plugin.cli import _config, build_parser, main

#: One command line per sub-command, each setting options away from their defaults.
SAMPLES = {
    "train": ["--dataset", "digits", "--method", "catrs", "--sigma", "0.5", "--checkpoint", "c.pt", "--hp", "lbd=2.0",
              "--epochs", "3", "--amp", "bf16", "--channels-last"],
    "certify": ["digits", "c.pt", "0.25", "o.tsv", "--N", "500", "--batch", "400", "--skip", "2", "--alpha", "0.01"],
    "predict": ["digits", "c.pt", "0.25", "o.tsv", "--N", "500", "--batch", "auto"],
    "analyze": ["a.tsv", "b.tsv", "--radii", "0", "0.5", "--format", "latex", "--plot", "p.png"],
    "compare": ["--dataset", "digits", "--methods", "gaussian,catrs", "--sigma", "0.25,0.5", "--epochs", "2",
                "--N0", "10", "--method-preset", "macer=original", "--format", "latex"],
    "demo": ["--output", "d", "--epochs", "2", "--N", "500", "--quiet"],
    "methods": ["--format", "json"],
    "smooth-predict": ["digits", "c.pt", "s.npy", "--N", "100", "--split", "test"],
    "certify-corruptions": ["c.pt", "0.25", "out", "--corruptions", "fog", "snow", "--severities", "1", "5"],
    "merge-shards": ["o.tsv", "--shards", "a.rank0", "a.rank1"],
}


def _parse(argv):
    parser = build_parser()
    _config.apply_config(argv, parser.commands)
    args = parser.parse_args(argv)
    return _config.settings(parser.commands[args.command], args)


def test_every_sub_command_is_sampled():
    assert set(SAMPLES) == set(build_parser().commands)


@pytest.mark.parametrize("command", sorted(SAMPLES))
def test_settings_round_trip_through_a_config_file(command, tmp_path):
    given = _parse([command, *SAMPLES[command]])
    path = _config.write_config(tmp_path / "config.json", command, given, "0")
    assert json.loads(path.read_text())["command"] == command
    assert _parse([command, "--config", str(path)]) == given


def test_options_on_the_command_line_override_the_file(tmp_path):
    given = _parse(["certify", *SAMPLES["certify"]])
    path = _config.write_config(tmp_path / "config.json", "certify", given, "0")
    again = _parse(["certify", "mnist", "--config", str(path), "--N", "1000", "--batch", "auto"])
    assert again == {**given, "dataset": "mnist", "N": 1000, "batch": "auto"}
    # a repeatable option adds to the file's list (the last --hp NAME wins when they are resolved)
    path = _config.write_config(tmp_path / "train.json", "train", _parse(["train", *SAMPLES["train"]]), "0")
    assert _parse(["train", "--config", str(path), "--hp", "lbd=1.0"])["hp"] == ["lbd=2.0", "lbd=1.0"]


@pytest.mark.parametrize("settings, message", [
    ({"skip": 1}, "`catrs train` has no setting 'skip'; valid: amp, arch,"),
    ({"epochs": 0}, "--epochs: must be an integer >= 1, got '0'"),
    ({"epochs": 2.5}, "--epochs: must be an integer >= 1"),
    ({"sigma": "high"}, "--sigma: could not convert string to float: 'high'"),
    ({"amp": "bf17"}, "--amp must be one of bf16, fp16, got 'bf17'"),
    ({"hp": "lbd=2"}, "--hp takes a list"),
    ({"channels_last": "yes"}, "--channels-last is true or false"),
])
def test_bad_config_values_are_refused_naming_the_option(settings, message, tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"command": "train", "settings": settings}))
    assert main(["train", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"catrs train: error: --config {path}: ") and message in error, error


def test_a_config_of_another_command_or_no_config_is_refused(tmp_path, capsys):
    path = _config.write_config(tmp_path / "config.json", "train", _parse(["train", *SAMPLES["train"]]), "0")
    assert main(["certify", "--config", str(path)]) == 2
    assert "holds the settings of `catrs train`, not of `catrs certify`" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    assert main(["train", "--config", str(tmp_path / "list.json")]) == 2
    assert capsys.readouterr().err.startswith("catrs train: error: --config: ")
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_and_certify_write_configs_that_reproduce_the_run(tmp_path, capsys):
    checkpoint, outfile = tmp_path / "g.pt", tmp_path / "g.tsv"
    assert main(["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--epochs", "2",
                 "--batch", "128", "--lr", "0.05", "--checkpoint", str(checkpoint), "--quiet", "--device", "cpu"]) == 0
    config = json.loads((tmp_path / "g.pt.config.json").read_text())
    assert config["command"] == "train" and config["settings"]["lr"] == 0.05 and "restart" not in config["settings"]
    capsys.readouterr()
    # the same run: the checkpoint's provenance matches, so nothing is trained again
    assert main(["train", "--config", str(tmp_path / "g.pt.config.json")]) == 0
    assert "all 2 epochs already done" in capsys.readouterr().out
    assert main(["certify", "digits", str(checkpoint), "0.25", str(outfile), "--N0", "20", "--N", "100", "--max", "6",
                 "--quiet", "--device", "cpu", "--save-config", str(tmp_path / "mine.json")]) == 0
    assert json.loads((tmp_path / "mine.json").read_text()) == json.loads((tmp_path / "g.tsv.config.json").read_text())
    capsys.readouterr()
    assert main(["certify", "--config", str(tmp_path / "g.tsv.config.json")]) == 0
    assert "wrote 0 rows" in capsys.readouterr().out  # same settings: the file's rows are all there
    assert main(["certify", "--config", str(tmp_path / "g.tsv.config.json"), "--N", "200"]) == 2  # not the same run
    assert "N" in capsys.readouterr().err


def test_a_failed_command_writes_no_config(tmp_path):
    assert main(["train", "--dataset", "digits", "--method", "catrs", "--sigma", "0.25", "--epochs", "1",
                 "--checkpoint", str(tmp_path / "c.pt"), "--quiet", "--device", "cpu"]) == 2  # needs soft labels
    assert not list(tmp_path.iterdir())
