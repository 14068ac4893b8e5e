"""What a run records about where it ran: versions, device, time."""
from __future__ import annotations

import datetime
import platform
import sys


def device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def run_info(device="cpu") -> dict:
    """Versions of Python, memaware and its key dependencies, the device and the time."""
    import numpy
    import torch

    from . import __version__

    return {
        "memaware": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
