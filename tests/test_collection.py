"""The suite's test ids are deterministic: pytest-xdist refuses to run when two workers collect different ids."""
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def collected_ids() -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-o", "addopts=",
                          "-p", "no:cacheprovider", "-p", "no:xdist", str(TESTS)],
                         capture_output=True, text=True, timeout=300, cwd=TESTS.parent)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return sorted(line for line in out.stdout.splitlines() if "::" in line)


def test_collecting_twice_gives_the_same_ids():
    first = collected_ids()
    second = collected_ids()
    assert len(first) > 300
    assert first == second, sorted(set(first) ^ set(second))[:5]
