"""Run directories: one per run specification, named by a stable hash of it, finished by a `done` marker.

A run directory holds spec.json (the specification, versions and device), history.jsonl (one evaluation
record a line), best.json (per criterion: step, validation and test metrics), checkpoint-<criterion>.pt,
and `done`, written last and atomically. A run that fails with a user-level error (a diverging learning
rate) is finished too: its best.json is empty and `done` holds the error, so selection passes it over. A directory without `done` is an interrupted run: it is
cleared and run again. A directory with `done` is never redone, unless other memaware code wrote it
(spec.json records the code version): such runs are redone unless the sweep is told to reuse them.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from ..data import io
from ..data.io import atomic_write
from ..runinfo import code_version, run_info
from ..train.checkpoint import save_checkpoint

DONE = "done"


def spec_key(spec: dict) -> str:
    """A stable 16-hex-digit hash of a JSON-able specification."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def write_json(path: Path, obj) -> None:
    """Write `obj` as indented JSON with sorted keys, atomically."""
    io.write_json(path, obj, sort_keys=True)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def remove_stale_temporaries(root: Path) -> None:
    """Delete the temporary files that a killed sweep left beside its files (atomic writes not completed)."""
    for tmp in Path(root).rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def is_done(folder: Path) -> bool:
    return (Path(folder) / DONE).is_file()


def written_by(folder: Path) -> str | None:
    """The memaware code version that wrote a run folder (None for folders older than that record)."""
    try:
        return read_json(Path(folder) / "spec.json")["run_info"].get("memaware_code")
    except (OSError, ValueError, KeyError):
        return None


def is_reusable(folder: Path, reuse_other_versions: bool = False) -> bool:
    """A finished run that this code wrote (or any finished run, with `reuse_other_versions`)."""
    return is_done(folder) and (reuse_other_versions or written_by(folder) == code_version())


def other_version_runs(root: Path) -> dict[str, int]:
    """Finished runs under a sweep folder written by other code versions: version -> count."""
    counts: dict[str, int] = {}
    current = code_version()
    for done in Path(root).glob("*/*/" + DONE):
        version = written_by(done.parent)
        if version != current:
            counts[str(version)] = counts.get(str(version), 0) + 1
    return counts


def fresh(folder: Path) -> Path:
    """An empty directory `folder`, clearing what an interrupted run left there."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def mark_done(folder: Path, summary: dict) -> None:
    """Write the completion marker (with a small summary) last, atomically."""
    write_json(Path(folder) / DONE, summary)


def write_spec(folder: Path, spec: dict, device: str) -> None:
    write_json(Path(folder) / "spec.json", {"spec": spec, "key": spec_key(spec), "run_info": run_info(device)})


def write_run(folder: Path, spec: dict, result) -> dict:
    """Store a finished training run (a RunResult) and mark it done; returns its best records."""
    folder = Path(folder)
    write_spec(folder, spec, result.config["device"])
    lines = "".join(json.dumps(record, default=float) + "\n" for record in result.history)
    atomic_write(folder / "history.jsonl", lambda tmp: tmp.write_text(lines))
    best = {c: {k: record[k] for k in ("step", "val", "test")} for c, record in result.best.items()}
    write_json(folder / "best.json", best)
    for criterion, state in result.best_states.items():
        save_checkpoint(folder / f"checkpoint-{criterion}.pt", state,
                        meta={"criterion": criterion, "step": result.best[criterion]["step"], "key": spec_key(spec)})
    mark_done(folder, {"key": spec_key(spec), "steps": result.config["steps"]})
    return best


def write_failed(folder: Path, spec: dict, device: str, error: str) -> None:
    """Store a run that stopped with a user-level error: no best records; `done` holds the error."""
    folder = Path(folder)
    write_spec(folder, spec, device)
    write_json(folder / "best.json", {})
    mark_done(folder, {"key": spec_key(spec), "error": error})


def read_best(folder: Path) -> dict:
    return read_json(Path(folder) / "best.json")


def read_history(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(folder) / "history.jsonl").read_text().splitlines() if line]
