"""benchmarks/gpu_table.py's budget: plans from its estimates, time limits that kill, the tables' verdicts.

The whole command is rehearsed on the CPU by CI (``.ci/run``: ``--device cpu --quick --budget
120``); these tests check its parts: what the planner chooses for a number of seconds, that a
contender past its time limit is killed with the processes it started and those after it are
not started, the per-test report of the CUDA tests, and how targets are marked.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_table  # noqa: E402
from _common import OutOfTime, deadline, isolated, run_contenders  # noqa: E402
from gpu_table import MARGIN, SECTIONS, TESTS, Planner  # noqa: E402


@pytest.fixture
def planner(tmp_path):
    return Planner("cuda", False, tmp_path)


def test_without_a_budget_every_section_runs_whole(planner):
    for name, spec in SECTIONS.items():
        plan = planner.plan(name, None)
        assert list(plan.contenders) == list(spec.contenders) and plan.size == spec.sizes[0]
        assert plan.estimate == pytest.approx(planner.setup(name, plan.argv) + sum(plan.contenders.values()))


def test_contenders_come_before_sizes_and_a_plan_fits_its_seconds(planner):
    name, spec = "certify-resnet110", SECTIONS["certify-resnet110"]
    everything_smallest = planner._planned(name, list(spec.contenders), spec.sizes[-1], {}).estimate
    plan = planner.plan(name, everything_smallest + 1)
    assert list(plan.contenders) == list(spec.contenders) and plan.size == spec.sizes[-1]
    for seconds in (2000, 400, 200, 150, 120, 60, 10):
        plan = planner.plan(name, seconds)
        assert plan.estimate <= seconds or not plan.contenders
        # in priority order at the smallest size, each contender is taken if it fits in what is left
        smallest = planner._planned(name, list(spec.contenders), spec.sizes[-1], {}).contenders
        left = seconds
        for contender, cost in smallest.items():
            assert (contender in plan.contenders) == (cost <= left), (seconds, contender)
            left -= cost if contender in plan.contenders else 0
        # then the largest size at which those fit
        larger = [size for size in spec.sizes if plan.contenders and size > plan.size]
        assert all(planner._planned(name, list(plan.contenders), size, {}).estimate > seconds for size in larger)
    assert not plan.contenders and plan.estimate > 10  # does not fit: the least it would need
    assert set(plan.left_out) == set(spec.contenders)
    cheap = planner.plan(name, 60)  # too short for the compilation: the cheaper contenders still run
    assert "engine-fast" not in cheap.contenders and "engine" in cheap.contenders
    assert cheap.left_out["engine-fast"].startswith("estimated")


def test_a_budget_of_480_seconds_plans_the_tests_certification_and_training(planner):
    """By its own estimates (for one H100 or H200), 480 s give (a), (b) and (c) their core contenders."""
    left = 480 - MARGIN - 20  # 20 s for the interpreter and the imports
    for position, name in enumerate(gpu_table.ORDER[:3]):
        plan = planner.plan(name, planner.allotment(left, name, list(gpu_table.ORDER[position + 1:])))
        core = 1 if name == TESTS else SECTIONS[name].core
        assert list(plan.contenders)[:core] == list(planner.contenders(name)[:core]), name
        left -= plan.estimate
    assert left >= 0


def test_later_sections_are_reserved_only_while_they_fit(planner):
    later = ["train-resnet110", "certify-resnet50"]
    train_minimum = planner.minimum("train-resnet110", 1000)
    roomy = planner.allotment(1000, "certify-resnet110", later)
    assert roomy == pytest.approx(1000 - train_minimum - planner.minimum("certify-resnet50", 1000))
    own = planner.minimum("certify-resnet110", 300)
    tight = own + train_minimum - 1  # no room for training beside certification's own minimum: nothing reserved
    assert planner.allotment(tight, "certify-resnet110", later) == tight


def test_slow_sections_scale_later_estimates_up_never_down(planner):
    argv = planner.plan("certify-resnet110", None).argv
    before = planner.estimate("certify-resnet110", "engine", argv)
    planner.took(30, 60)
    assert planner.scale == 1.0
    planner.took(150, 30)  # 180 s taken for 90 s estimated
    assert planner.scale == pytest.approx(2.0)
    assert planner.estimate("certify-resnet110", "engine", argv) == pytest.approx(2 * before)


def test_quick_arguments_replace_the_gpu_sizes():
    argv = gpu_table.arguments("certify-resnet110", True, ["engine", "engine-fast", "engine-bf16"], 1)
    assert argv[argv.index("--n") + 1] == "10" and argv.count("--n") == 1
    assert argv[argv.index("--contenders") + 1: argv.index("--amp")] == ["engine", "fast"]
    assert argv[argv.index("--amp") + 1:] == ["bf16"]
    assert gpu_table.arguments("train-resnet110", False, ["ours-fast"], 20)[-3:] == ["20", "--contenders", "ours-fast"]


# ----------------------------------------------------------------------------- time limits (fresh processes)


def _contender(config, contender):
    """A measurement for run_contenders: sleeps, raises, or starts a process of its own and sleeps."""
    if contender == "broken":
        raise ValueError("broken on purpose")
    if contender == "child":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        Path(config["pid_file"]).write_text(str(child.pid))
        time.sleep(120)
    return {"seconds": 1.0}


def _running(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped


def test_a_contender_past_the_time_limit_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "pid"
    config = {"repeats": 1, "pid_file": str(pid_file)}
    began = time.monotonic()
    results, left_out = run_contenders(_contender, config, ["child", "after"], "seconds", deadline(20))
    assert time.monotonic() - began < 25
    assert results == {} and left_out["child"].startswith("stopped by the time limit after")
    assert left_out["after"] == "not started: no time left"
    if pid_file.exists():  # the contender got as far as starting its own process (not if its imports took 20 s)
        pid = int(pid_file.read_text())
        for _ in range(50):
            if not _running(pid):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the contender's own process {pid} outlived the time limit")


def test_errors_estimates_and_no_time(tmp_path):
    config = {"repeats": 1}
    results, left_out = run_contenders(_contender, config, ["quick", "broken", "expensive"], "seconds", deadline(600),
                                       tolerated=(ValueError,), expected={"quick": 1.0, "expensive": 10_000})
    assert list(results) == ["quick"]
    assert left_out["broken"] == "failed: ValueError: broken on purpose"
    assert left_out["expensive"].startswith("not started: needs about 10000 s, ")  # more than is left
    with pytest.raises(ValueError, match="on purpose"):
        run_contenders(_contender, config, ["broken"], "seconds", tolerated=(ValueError,), required=("broken",))
    with pytest.raises(OutOfTime, match="no time left"):
        isolated(_contender, config, "quick", timeout=0)


# ----------------------------------------------------------------------------- the CUDA tests' report, the verdicts


def test_the_test_report_plugin_writes_each_outcome(tmp_path):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_passes(): pass\n"
        "def test_fails(): assert 1 == 2\n"
        "@pytest.mark.skip(reason='not here')\n"
        "def test_skipped(): pass\n"
        "@pytest.fixture\n"
        "def broken(): raise RuntimeError('setup broke')\n"
        "def test_setup_error(broken): pass\n"
    )
    report = tmp_path / "report.jsonl"
    env = {**os.environ, "CATRS_TEST_REPORT": str(report),
           "PYTHONPATH": os.pathsep.join([str(BENCHMARKS), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "_test_report", "-p", "no:cacheprovider",
                    "test_sample.py"], cwd=tmp_path, env=env, capture_output=True, check=False)
    lines = {json.loads(line)["test"].split("::")[1]: json.loads(line) for line in report.read_text().splitlines()}
    assert {name: line["outcome"] for name, line in lines.items()} == {
        "test_passes": "passed", "test_fails": "failed", "test_skipped": "skipped", "test_setup_error": "error"}
    assert lines["test_skipped"]["message"] == "not here" and "1 == 2" in lines["test_fails"]["message"]
    assert "setup broke" in lines["test_setup_error"]["message"] and lines["test_passes"]["message"] is None


def _stored(seconds_per_image, left_out=None):
    figures = {} if seconds_per_image is None else {"engine-fast": {"seconds_per_image": seconds_per_image}}
    return {"certify-resnet110": {"figures": figures, "left_out": left_out or {}}}


@pytest.mark.parametrize("device, quick, seconds, verdict", [
    ("cuda", False, 0.30, "met"),
    ("cuda", False, 0.50, "NOT met"),
    ("cuda", True, 0.30, "not judged (--quick sizes)"),
    ("cpu", False, 0.30, "not judged (not a GPU)"),
])
def test_targets_are_judged_only_on_a_gpu_at_full_size(device, quick, seconds, verdict):
    args = argparse.Namespace(device=device, quick=quick)
    assert gpu_table._verdict("certify-resnet110", "engine-fast", _stored(seconds), args) == [f"{seconds:.3f}", verdict]


def test_targets_not_measured_are_marked_not_reached():
    args = argparse.Namespace(device="cuda", quick=False)
    assert gpu_table._verdict("certify-resnet50", "engine-fast", {}, args)[1] == "not reached within the budget"
    cut = _stored(None, {"engine-fast": "stopped by the time limit after 80 s"})
    assert gpu_table._verdict("certify-resnet110", "engine-fast", cut, args)[1] == "not reached within the budget"
    broken = _stored(None, {"engine-fast": "failed: RuntimeError: CUDA error"})
    assert gpu_table._verdict("certify-resnet110", "engine-fast", broken, args)[1] == "failed"
