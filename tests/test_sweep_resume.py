"""Run storage and resume: a sweep killed with SIGKILL resumes to the same results, without duplicates."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memaware.sweep import store
from memaware.sweep.experiment import load_experiment
from memaware.sweep.runner import RunSpec, execute_run, run_dir, run_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "tiny.yaml"
# slower runs than the file's, so that the kill lands in the middle of the sweep
OVERRIDES = ["datasets.0.train.steps=150", "search.combinations=4"]


def done_runs(folder: Path) -> list[Path]:
    return sorted(p.parent for p in (folder / "runs").glob("*/done"))


def comparable(folder: Path) -> dict:
    """The summary's results, and every run's specification, seed, device and best records."""
    runs = {}
    for d in sorted((folder / "runs").iterdir()):
        spec = json.loads((d / "spec.json").read_text())
        runs[d.name] = {"spec": spec["spec"], "seed": spec["spec"]["run"]["train"]["seed"],
                        "device": spec["run_info"]["device_name"], "best": store.read_best(d)}
    summary = json.loads((folder / "summary.json").read_text())
    return {"results": summary["results"], "phase1": summary["phase1"], "runs": runs}


def kill_mid_sweep(out: Path) -> int:
    """Start the sweep in a subprocess and SIGKILL it once two runs are done; returns how many were done."""
    cmd = [sys.executable, "-m", "memaware.cli", "sweep", str(TINY), "--out", str(out)]
    cmd += [arg for o in OVERRIDES for arg in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # generous: CI shares two cores with the other tests
    try:
        while not (out / "runs").exists() or len(done_runs(out)) < 2:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no run finished within 300 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return len(done_runs(out))


def test_kill_9_then_resume_gives_the_uninterrupted_results_without_duplicates(tmp_path):
    exp = load_experiment(TINY, OVERRIDES)
    killed = tmp_path / "killed"
    n_done_at_kill = kill_mid_sweep(killed)
    assert not (killed / "summary.json").exists()
    (killed / ".summary.json.x1.tmp").write_text("{")  # what a kill during an atomic write leaves
    finished_before = {d.name: (d / "done").stat().st_mtime_ns for d in done_runs(killed)}

    run_sweep(exp, killed)
    reference = tmp_path / "reference"
    run_sweep(exp, reference)

    n_total = len(list((reference / "runs").iterdir()))
    print(f"killed after {n_done_at_kill} of {n_total} runs")
    assert 2 <= n_done_at_kill < n_total
    # finished runs were not redone
    assert {d.name: (d / "done").stat().st_mtime_ns for d in done_runs(killed) if d.name in finished_before} \
        == finished_before
    # same run directories (no duplicates, no leftovers), all finished, same numbers, seeds and device
    assert sorted(p.name for p in (killed / "runs").iterdir()) == sorted(p.name for p in (reference / "runs").iterdir())
    assert len(done_runs(killed)) == n_total
    assert comparable(killed) == comparable(reference)
    rows = [(r["dataset"], r["method"], r["criterion"]) for r in comparable(killed)["results"]]
    assert len(rows) == len(set(rows)) == 4 * 3
    assert not list(killed.rglob("*.tmp"))


def tiny_spec(steps: int = 5) -> RunSpec:
    train = {"steps": steps, "checkpoint_freq": 2, "lr": 0.01, "batch_size": None, "momentum": 0.0, "seed": 0}
    return RunSpec("figure1", {"n": 60, "d": 20}, "erm", {}, train, None)


def test_an_unfinished_run_directory_is_cleared_and_run_again(tmp_path):
    spec = tiny_spec()
    folder = run_dir(tmp_path, spec.key)
    folder.mkdir(parents=True)
    (folder / "history.jsonl").write_text('{"step": 0, "partial": true}\n')
    (folder / "stale.pt").write_text("left by a killed process")

    result = execute_run(spec, tmp_path)

    assert store.is_done(folder) and not (folder / "stale.pt").exists()
    history = store.read_history(folder)
    assert [r["step"] for r in history] == [0, 2, 4]
    assert set(result["best"]) == {"va_wga", "va_wca", "va_avg"}  # no phase 1: no inferred groups
    for criterion, best in result["best"].items():
        assert (folder / f"checkpoint-{criterion}.pt").is_file()
        assert best["step"] in (0, 2, 4) and set(best) == {"step", "val", "test"}
    saved = json.loads((folder / "spec.json").read_text())
    assert saved["key"] == spec.key == folder.name and saved["spec"]["run"]["train"]["seed"] == 0
    assert saved["run_info"]["device"] == "cpu"


def test_a_finished_run_is_read_back_not_redone(tmp_path):
    spec = tiny_spec()
    first = execute_run(spec, tmp_path)
    folder = run_dir(tmp_path, spec.key)
    best = json.loads((folder / "best.json").read_text())
    best["va_wga"]["step"] = 999  # a finished run's files are trusted as they are
    store.write_json(folder / "best.json", best)
    assert execute_run(spec, tmp_path)["best"]["va_wga"]["step"] == 999
    assert first["best"]["va_wga"]["step"] != 999


@pytest.mark.parametrize("change", [{"seed": 1}, {"lr": 0.02}])
def test_the_run_key_is_stable_and_changes_with_the_specification(change):
    spec = tiny_spec()
    assert spec.key == tiny_spec().key and len(spec.key) == 16
    other = RunSpec(spec.dataset, spec.dataset_args, spec.method, spec.hparams, {**spec.train, **change}, None)
    assert other.key != spec.key


def test_a_diverging_run_is_finished_as_failed_and_selection_passes_it_over(tmp_path):
    from memaware.sweep.runner import select_combination

    train = {**tiny_spec().train, "lr": 1e30}
    diverging = RunSpec("figure1", {"n": 60, "d": 20}, "groupdro", {"eta": 1e6}, train, None)
    result = execute_run(diverging, tmp_path)
    done = json.loads((run_dir(tmp_path, diverging.key) / "done").read_text())
    assert result["best"] == {} and "loss became nan" in done["error"]
    fine = execute_run(tiny_spec(), tmp_path)
    assert select_combination([(0, result["best"]), (1, fine["best"])], "va_wga") == 1


def stamp_other_version(folder: Path) -> None:
    spec = json.loads((folder / "spec.json").read_text())
    spec["run_info"]["memaware_code"] = "0.0.1+0123456789ab"
    (folder / "spec.json").write_text(json.dumps(spec))


@pytest.mark.parametrize("reuse", [False, True], ids=["rerun", "reuse"])
def test_runs_of_another_memaware_version_are_rerun_unless_asked(tmp_path, reuse):
    from typer.testing import CliRunner

    import memaware.cli.sweep  # noqa: F401  (registers the command)
    from memaware.cli import app

    out = tmp_path / "sweep"
    args = ["sweep", str(TINY), "--out", str(out), "--set", "search.combinations=2"]
    assert CliRunner().invoke(app, args).exit_code == 0
    old = done_runs(out)[0]
    stamp_other_version(old)
    (old / "best.json").write_text("{}")  # what the other version found: reused only when asked
    result = CliRunner().invoke(app, args + (["--reuse-runs-from-other-versions"] if reuse else []))
    assert result.exit_code == 0, result.output
    assert "written by other memaware code (1 by 0.0.1+0123456789ab" in result.stderr
    assert ("reusing them" if reuse else "running them again") in result.stderr
    assert (store.read_best(old) == {}) == reuse
    assert (store.written_by(old) == "0.0.1+0123456789ab") == reuse
