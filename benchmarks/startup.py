"""What the start-up hook (catrs_adapters.hook) costs every Python process, and what it adds to ``import timm``.

Interpreter start-up: two fresh virtual environments of this interpreter, one empty and one with
only our wheel installed (its ``catrs_adapters.pth``, ``catrs_adapters.start`` and the package,
byte-compiled as pip installs them), each start ``python -X importtime -c pass`` in turn
``--repeats`` times. Reported: the median and fastest wall-clock time of the whole process and
of the ``site`` import (which runs the ``.pth`` files), and the cumulative import time of our
modules.

``import timm``: in the running environment (which has catrs-plugin installed), the median
cumulative import time of ``timm`` and of ``catrs_adapters.timm_models``, which the hook imports
right after timm to register our models.

The ``catrs`` command (``--part commands``): ``python -X importtime -m catrs_plugin.cli ARGS`` for
``--help``, ``train --help``, ``methods`` and ``analyze`` of one released result file, each started
``--repeats`` times in turn, with the package of each ``--checkout`` folder first on the path
(default: this checkout), so that two versions of the code are measured interleaved under the same
load. Reported per command: the median and fastest wall-clock time of the whole process and
whether it imported torch.

Examples (about a minute each)::

    python benchmarks/startup.py --repeats 30
    python benchmarks/startup.py --part commands --repeats 10 --checkout /tmp/before --checkout .
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| *(\S+)")


def import_times(stderr: str) -> dict[str, int]:
    """Module -> cumulative microseconds of its outermost import in ``-X importtime`` output."""
    times: dict[str, int] = {}
    for _, cumulative, name in IMPORT_LINE.findall(stderr):
        times[name] = max(times.get(name, 0), int(cumulative))
    return times


def make_venv(directory: Path, wheel: Path | None) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    python = directory / "bin" / "python"
    if wheel is not None:
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                        "--disable-pip-version-check", "--upgrade", "--target", purelib, str(wheel)], check=True)
    return python


def start_up(python: Path, code: str = "pass") -> tuple[float, dict[str, float]]:
    """Wall-clock milliseconds of ``python -X importtime -c code`` and each module's import milliseconds.

    Byte code is written and used (as after ``pip install``), whatever ``PYTHONDONTWRITEBYTECODE`` says.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    started = time.perf_counter()
    done = subprocess.run([str(python), "-X", "importtime", "-c", code], capture_output=True, text=True, check=True,
                          env=env)
    seconds = time.perf_counter() - started
    return seconds * 1e3, {name: us / 1e3 for name, us in import_times(done.stderr).items()}


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):7.2f} ms, fastest {min(values):7.2f} ms"


#: ``catrs`` arguments timed by ``--part commands`` (paths relative to the checkout).
COMMANDS = (("--help",), ("train", "--help"), ("methods",),
            ("analyze", "tests/data/catrs-official-certify/cifar10/cat-rs/noise_0.25.tsv"))


def command_startup(repeats: int, checkouts: list[Path]) -> None:
    """Time each of :data:`COMMANDS` with the package of each checkout first on the path, interleaved."""
    wall: dict[tuple[Path, tuple[str, ...]], list[float]] = {}
    torch_imported: dict[tuple[Path, tuple[str, ...]], bool] = {}
    for round_ in range(repeats + 1):  # round 0 writes the byte code and is not counted
        for checkout in checkouts:
            env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPATH"] = os.pathsep.join([str(checkout), str(checkout / "adapters"), env.get("PYTHONPATH", "")])
            for command in COMMANDS:
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-X", "importtime", "-m", "catrs_plugin.cli", *command],
                                      cwd=checkout, env=env, capture_output=True, text=True, check=True)
                seconds = time.perf_counter() - started
                if round_:
                    wall.setdefault((checkout, command), []).append(seconds * 1e3)
                    torch_imported[checkout, command] = "torch" in import_times(done.stderr)
    print(f"Python {sys.version.split()[0]}, {repeats} starts per command and checkout, interleaved")
    for checkout in checkouts:
        print(f"  {checkout}:")
        for command in COMMANDS:
            label = "catrs " + " ".join(command[:1] if command[0] == "analyze" else command)
            torch_text = "imports torch" if torch_imported[checkout, command] else "no torch"
            print(f"    {label:20s} {summary(wall[checkout, command])}  ({torch_text})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="interpreter starts per environment (default 30)")
    parser.add_argument("--part", choices=("hook", "commands", "all"), default="all",
                        help="the start-up hook, the catrs command, or both (default: all)")
    parser.add_argument("--checkout", action="append", type=Path, default=None, metavar="DIR",
                        help="checkout whose catrs_plugin the commands run (repeatable; default: this one)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    checkouts = [path.resolve() for path in args.checkout or [ROOT]]
    missing = [str(path) for path in checkouts if not (path / "catrs_plugin" / "cli" / "__init__.py").is_file()]
    if missing:
        parser.error(f"--checkout must be a catrs-plugin checkout, got {', '.join(missing)}")
    if args.part in ("hook", "all"):
        hook_startup(args.repeats)
    if args.part in ("commands", "all"):
        command_startup(args.repeats, checkouts)


def hook_startup(repeats: int) -> None:
    """Interpreter start-up with and without the hook, and what registering our models adds to ``import timm``."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        code = f"from hatchling.build import build_wheel; print(build_wheel({str(scratch_dir)!r}))"
        wheel_name = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True,
                                    text=True).stdout.strip()
        pythons = {"without the hook": make_venv(scratch_dir / "empty", None),
                   "with the hook": make_venv(scratch_dir / "hooked", scratch_dir / wheel_name)}
        wall: dict[str, list[float]] = {name: [] for name in pythons}
        site_ms: dict[str, list[float]] = {name: [] for name in pythons}
        ours_ms: list[float] = []
        for python in pythons.values():
            start_up(python)  # writes byte code where pip did not
        for _ in range(repeats):
            for name, python in pythons.items():
                wall_ms, times = start_up(python)
                wall[name].append(wall_ms)
                site_ms[name].append(times["site"])
                if name == "with the hook":  # the .pth line's import, as site runs it
                    ours_ms.append(times["catrs_adapters.hook"])

        timm_total, timm_ours = [], []
        start_up(Path(sys.executable), "import timm")  # writes the byte code of a checkout
        for _ in range(max(1, repeats // 10)):
            _, times = start_up(Path(sys.executable), "import timm")
            timm_total.append(times["timm"])
            timm_ours.append(times["catrs_adapters.timm_models"])

    print(f"Python {sys.version.split()[0]}, {repeats} starts per environment, interleaved")
    for name in pythons:
        print(f"  python -c pass, {name:17s} whole process {summary(wall[name])}; site {summary(site_ms[name])}")
    print(f"  our imports at start-up (-X importtime, cumulative): {summary(ours_ms)}")
    print(f"import timm in this environment ({len(timm_total)} runs): timm {summary(timm_total)}; "
          f"registering our models {summary(timm_ours)}")


if __name__ == "__main__":
    main()
