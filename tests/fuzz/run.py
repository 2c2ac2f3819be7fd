"""Run one fuzz harness by hand: ``python -m tests.fuzz.run HARNESS [--seconds N] [--atheris -- FLAGS]``.

Prints iterations, iterations per second and each distinct finding; saves one input per finding
under ``tests/fuzz/findings/HARNESS/``. See :mod:`tests.fuzz.engine`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

from tests.fuzz import engine, harnesses


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("harness", choices=sorted(harnesses.ALL))
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--atheris", action="store_true", help="use atheris (libFuzzer flags after --)")
    ap.add_argument("rest", nargs="*")
    a = ap.parse_args(argv)
    target = harnesses.ALL[a.harness]
    if a.atheris:
        engine.fuzz_atheris(target, [sys.argv[0], os.path.join(engine.CORPUS, a.harness), *a.rest])
        return 0
    rep = engine.fuzz_loop(a.harness, target, a.seconds, a.seed)
    print(f"{a.harness}: {rep.iterations} inputs in {rep.seconds:.1f} s ({rep.per_second:.0f}/s), "
          f"{len(rep.findings)} distinct findings")
    out = os.path.join(os.path.dirname(__file__), "findings", a.harness)
    for key, data in rep.findings.items():
        os.makedirs(out, exist_ok=True)
        name = hashlib.sha1(data).hexdigest()[:12]
        with open(os.path.join(out, name), "wb") as fh:
            fh.write(data)
        print(f"  {key}  ({name})")
    return 1 if rep.findings else 0


if __name__ == "__main__":
    sys.exit(main())
