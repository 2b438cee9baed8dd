"""The README's quick start runs and prints what the README says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_quick_start_prints_what_the_readme_shows(tmp_path: Path) -> None:
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    shown = re.search(r"\nprints\n\n```\n(.*?)```", text, re.S)
    assert code is not None
    assert shown is not None
    script = tmp_path / "quick_start.py"
    script.write_text(code.group(1))
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == shown.group(1)
