"""Fuzzing engine for the reader harnesses: atheris when it is installed, else a plain mutation loop.

A harness is a function ``target(data: bytes)`` that writes ``data`` to a file and calls one
reader. Any exception other than :class:`evsnn.errors.EvsnnError` is a finding, and so is an
input that takes longer than ``timeout`` seconds (SIGALRM).

- In the test suite (``tests/test_fuzz.py``) the plain loop runs each harness for
  ``EVSNN_FUZZ_SECONDS`` seconds (default 5; the issue's CI cap is 20) from the committed seed
  corpus in ``tests/fuzz/corpus/<harness>/``, seeded, so a run is reproducible.
- ONNX inputs are half byte mutations, half structure-aware ones (:mod:`tests.fuzz.onnx_mutator`).
- Longer runs, by hand: ``python -m tests.fuzz.run network --seconds 240`` (plain loop), or with
  atheris installed ``python -m tests.fuzz.run network --atheris -- -max_total_time=240``
  (libFuzzer flags after ``--``). Findings are saved under ``tests/fuzz/findings/<harness>/``.
"""

from __future__ import annotations

import os
import gc
import random
import signal
import sys
import time
from dataclasses import dataclass, field

from evsnn.errors import EvsnnError

CORPUS = os.path.join(os.path.dirname(__file__), "corpus")
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2 ** 63 - 1, 2 ** 64 - 1]


class Timeout(Exception):
    pass


@dataclass
class Report:
    harness: str
    iterations: int = 0
    seconds: float = 0.0
    findings: dict = field(default_factory=dict)  # "Type: first line" → example input

    @property
    def per_second(self) -> float:
        return self.iterations / self.seconds if self.seconds else 0.0

    def kinds(self) -> set[str]:
        return {k.split(":")[0] for k in self.findings}


def seeds(harness: str) -> list[bytes]:
    folder = os.path.join(CORPUS, harness)
    return [open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 8))):
        op = rng.randrange(7)
        if not b:
            b = bytearray(rng.choice(pool)[:64] or b"\0")
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.randrange(256)
        elif op == 2:
            v = rng.choice(INTERESTING)
            n = rng.choice((1, 2, 4, 8))
            b[i:i + n] = (v & ((1 << (8 * n)) - 1)).to_bytes(n, rng.choice(("little", "big")))
        elif op == 3:
            del b[i:i + rng.randrange(1, 64)]
        elif op == 4:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == 5:
            b = b[: rng.randrange(len(b) + 1)]
        else:
            other = rng.choice(pool)
            j = rng.randrange(len(other) + 1)
            b[i:] = other[j:j + rng.randrange(1, 256)]
    return bytes(b)


def call(target, data: bytes, timeout: float) -> str | None:
    """Run one input; the finding's key, or None when the harness behaved (success or EvsnnError)."""
    def alarm(signum, frame):
        raise Timeout(f"over {timeout} s")

    unraisable = []
    old = signal.signal(signal.SIGALRM, alarm)
    old_hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        target(data)
        gc.collect()
    except EvsnnError:
        return None
    except Exception as e:  # noqa: BLE001 - every other exception is what the fuzzer looks for
        return f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        sys.unraisablehook = old_hook
    if unraisable:  # an error swallowed while an object was released (e.g. NumPy's internal errors)
        e = unraisable[0].exc_value
        return f"unraisable {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
    return None


def structured_mutator(harness: str):
    """``mutate(rng, seed) -> bytes | None`` that edits a decoded seed, for harnesses whose format
    byte mutations rarely get past (half of the loop's inputs then come from it), else None."""
    if harness == "onnx":
        from tests.fuzz.onnx_mutator import mutate_model

        return mutate_model
    return None


def fuzz_loop(harness: str, target, seconds: float, seed: int = 0, timeout: float = 10.0,
              max_iterations: int | None = None) -> Report:
    """Mutate the seed corpus for ``seconds`` (or ``max_iterations`` inputs, whichever ends first);
    every seed first runs unmutated (it must load)."""
    rng = random.Random(seed)
    pool = seeds(harness)
    structured = structured_mutator(harness)
    rep = Report(harness)
    t0 = time.perf_counter()
    for s in pool:
        key = call(target, s, timeout)
        if key:
            rep.findings.setdefault("seed " + key, s)
        rep.iterations += 1
    while time.perf_counter() - t0 < seconds and (max_iterations is None or rep.iterations < max_iterations):
        data = structured(rng, rng.choice(pool)) if structured and rng.random() < 0.5 else None
        data = mutate(rng, rng.choice(pool), pool) if data is None else data
        key = call(target, data, timeout)
        rep.iterations += 1
        if key:
            rep.findings.setdefault(key, data)
    rep.seconds = time.perf_counter() - t0
    return rep


def fuzz_atheris(target, argv) -> None:  # pragma: no cover - by hand only
    """Run ``target`` under atheris/libFuzzer (never returns); EvsnnError counts as success."""
    import atheris

    def one(data: bytes) -> None:
        try:
            target(data)
        except EvsnnError:
            pass

    atheris.Setup(argv, one)
    atheris.Fuzz()
