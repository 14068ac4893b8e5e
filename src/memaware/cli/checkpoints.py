"""`memaware run --checkpoint-every N` and `torchrun ... -m memaware run`: where each training run of the
command keeps its checkpoint, and which process writes.

OUT/checkpoint/ holds phase1.pt (XRM, while it trains) or phase1-foldK.pt (cross-fitting's fold K, kept once
that fold is done), phase1.npz (phase 1's result once done) and METHOD-seedSEED.pt per run (kept after its
last step, so a rerun does not train it again). The same command, rerun after a kill, resumes every run from
there; once the outputs are written the folder is removed.
A checkpoint of other settings is an error (memaware.train.resume). Under torchrun, rank 0 writes.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Saving:
    """The checkpoint folder (None: no checkpoints), every how many steps, and the process group (or None)."""

    folder: Path | None
    every: int | None
    distributed: object = None

    @property
    def main(self) -> bool:
        """Whether this process writes (the only one, or rank 0)."""
        from ..train.distributed import is_main

        return is_main(self.distributed)

    def first_on_main(self, work):
        """work() on rank 0 first, then on the other processes (which then find rank 0's cache files)."""
        from ..train.distributed import first_on_main

        return first_on_main(self.distributed, work)

    def run_options(self, name: str) -> dict:
        """`fit`'s checkpoint and distributed arguments for the run `name`."""
        from ..train.resume import Checkpointing

        checkpoint = None if self.every is None else Checkpointing(self.folder / f"{name}.pt", self.every)
        return {"checkpoint": checkpoint, "distributed": self.distributed}

    def phase1_done(self):
        """Phase 1's result kept by an earlier attempt of this command, or None."""
        from ..heldout.base import HeldOut

        path = None if self.every is None else self.folder / "phase1.npz"
        return HeldOut.load(path) if path is not None and path.is_file() else None

    def phase1_finished(self, phase1):
        """Keep phase 1's result for a rerun; every process takes rank 0's."""
        if self.distributed is not None:
            self.distributed.share(phase1.logits, *phase1.inferred.values())
        if self.every is not None and self.main:
            phase1.save(self.folder / "phase1.npz")
        return phase1

    def close(self) -> None:
        """Leave the process group, if any."""
        from ..train.distributed import stop

        stop(self.distributed)

    def finished(self) -> None:
        """The outputs are written: the checkpoints are no longer needed."""
        if self.folder is not None and self.every is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
