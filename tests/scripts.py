"""Helpers for tests that exercise the scripts in bench/ and optional packages."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def has(mod: str) -> bool:
    """Whether ``mod`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def bench_script(name: str):
    """bench/<name>.py loaded as a module (once per process)."""
    key = f"evsnn_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "bench" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]
