"""Run every example under real Ray: code written for actorkit must stay Ray code.

Each example's ``actorkit`` imports are rewritten to ``ray`` ones and the
result runs in a fresh interpreter that has Ray installed (tox -e ray). An
example that uses something only actorkit has is listed in ``ACTORKIT_ONLY``
with the reason, and skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

ACTORKIT_ONLY = {
    "multiprocessing_pool.py": "actorkit.util.futures.Executor has no public Ray counterpart",
    "process_pool_after_tasks.py": "its second half shows actorkit.util.futures.Executor",
}


def as_ray_code(source: str) -> str:
    source = re.sub(r"\bimport actorkit as ray\b", "import ray", source)
    source = re.sub(r"\bimport actorkit\b", "import ray as actorkit", source)
    return re.sub(r"\bfrom actorkit\.", "from ray.", source)


def main() -> int:
    failures = []
    for name in sorted(os.listdir(HERE)):
        if not name.endswith(".py") or name == os.path.basename(__file__):
            continue
        if name in ACTORKIT_ONLY:
            print(f"skip {name}: {ACTORKIT_ONLY[name]}")
            continue
        with open(os.path.join(HERE, name)) as f:
            code = as_ray_code(f.read())
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write(code)
            env = dict(os.environ, RAY_DEDUP_LOGS="0", PYTHONPATH=HERE)
            proc = subprocess.run([sys.executable, path], cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"{status:8s} {name}")
        if proc.returncode:
            failures.append(name)
            print(proc.stdout[-2000:], proc.stderr[-3000:], sep="\n")
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
