"""The README's Python example runs as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    erm, mat = (scope["runs"][m].selected("va_gi_wga") for m in ("erm", "mat"))
    assert mat["step"] >= 500 and mat["test"]["wga"] > 0.9  # a trained checkpoint, not step 0
    assert erm["test"]["wga"] < 0.4
    assert scope["loss"].item() < 0.7


def test_readme_quick_start_has_exactly_two_commands():
    quick = README.read_text().split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert len(quick.strip().splitlines()) == 2
    assert "memaware demo" in quick and ".ci/run" in quick
