"""Run torchcost as a user types it: ``python -m torchcost ...`` in a subprocess, stdin/stdout/stderr not terminals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema


@dataclass(frozen=True)
class Run:
    rc: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def torchcost(*args: str, cwd: Path | None = None, timeout: float = 300) -> Run:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([sys.executable, "-m", "torchcost", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(done.returncode, done.stdout, done.stderr)


def python(code: str, cwd: Path | None = None, timeout: float = 300) -> Run:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return Run(done.returncode, done.stdout, done.stderr)


def schema(name: str) -> dict[str, Any]:
    return json.loads((resources.files("torchcost") / "schema" / name).read_text())


def validate(instance: Any, name: str) -> None:
    """Validate against the JSON Schema shipped in torchcost/schema (jsonschema is in the dev extra)."""
    spec = schema(name)
    jsonschema.Draft202012Validator.check_schema(spec)
    jsonschema.Draft202012Validator(spec).validate(instance)
