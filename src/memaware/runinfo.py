"""What a run records about where it ran: versions, device, time."""
from __future__ import annotations

import datetime
import functools
import hashlib
import platform
import sys
from pathlib import Path


def device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """memaware's version and a fingerprint of its source files: runs written by other code differ here.
    Computed once per process, when the code was loaded (a file edited later does not change it)."""
    from . import __version__

    digest = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def run_info(device="cpu") -> dict:
    """Versions of Python, memaware and its key dependencies, the device and the time."""
    import numpy
    import torch

    from . import __version__

    return {
        "memaware": __version__,
        "memaware_code": code_version(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
