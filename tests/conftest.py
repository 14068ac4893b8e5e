import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def device() -> str:
    """The device the device-aware tests train on: MEMAWARE_TEST_DEVICE (default cpu), e.g. cuda on a GPU host."""
    return os.environ.get("MEMAWARE_TEST_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Keep the CLI's default feature cache ($MEMAWARE_CACHE) inside the test run's temporary folder."""
    monkeypatch.setenv("MEMAWARE_CACHE", str(tmp_path_factory.getbasetemp() / "memaware-cache"))
