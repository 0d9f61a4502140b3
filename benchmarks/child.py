"""Running one benchmark setting in a fresh Python process (settings TensorFlow fixes when
it starts: thread pools, XLA flags). No TensorFlow import here, so a child sets them first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_child(module: str, args: list[str], env: dict | None = None) -> dict:
    """``python -m module *args`` from the repository root; returns the JSON object the child
    printed last. Raises RuntimeError with the child's stderr when it fails."""
    command = [sys.executable, "-m", module, *args]
    out = subprocess.run(command, capture_output=True, text=True, env=env,
                         cwd=Path(__file__).parent.parent)
    if out.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])
