"""``python -m bench.notebook02`` (``make bench-notebook02``): notebook 02's wall time per fine-tuning seed on the
mini profile, before and after the training changes, read from the study's own records.

* before: the collected mini run of commit ``BEFORE`` (``docs/results/mini/timings.json`` there, read with
  ``git show``): the HF Trainer with random batches, the 8 epochs its grid chose, a test-split N×N.
* after: the study under ``--root`` (its ``reports/study/mini/timings.json``): the plain loop with length
  bucketing, the 12 epochs the widened dev grid chose, a dev and a test N×N.

A stage counts where one invocation ran it: its ``seconds``. notebook 02 is one job that resumes source by source,
so an invocation that found some sources trained already timed only a part; for the after run the sources' own
``train_runtime`` (``training_args.json``, summed over the sources and divided by the workers) gives the
fine-tuning part, and a stage whose wall time is below it was a resume: it is listed as such, not as a per-seed
time. The runs differ in epochs, so the comparable figure is source-epochs per wall minute (51 sources × epochs /
minutes), which counts the N×N in the time of both (the after run evaluates two splits, the before one).
Writes ``reports/bench/notebook02.json``; ``docs/performance.md`` renders it (``python -m mu docs``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from mu import paths
from mu.experiment.budget import fine_tuning

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "reports" / "bench" / "notebook02.json"
BEFORE = "93861da"
_STAGE = re.compile(r"^(?:seed (?P<seed>\d+) )?notebook 02$")


def stages(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every invocation that finished a notebook 02 stage: its seed (None: the main run's), seconds, epochs, workers."""
    out = []
    for entry in entries:
        for name, s in (entry.get("stages") or {}).items():
            m = _STAGE.match(name)
            if m and s.get("ran") and not s.get("partial"):
                out.append(
                    {
                        "stage": name,
                        "seed": int(m["seed"]) if m["seed"] else None,
                        "seconds": float(s["seconds"]),
                        "epochs": (entry.get("tuned") or {}).get("epochs"),
                        "workers": entry.get("workers"),
                        "train": entry.get("train"),
                    }
                )
    return out


def row(run: str, code: str, stage: dict[str, Any], locales: int, fit: tuple[float, int] | None) -> dict[str, Any]:
    whole = fit is None or stage["seconds"] >= fit[0]
    return {
        "run": run,
        "code": code,
        **stage,
        "minutes": stage["seconds"] / 60,
        "fine_tuning_minutes": fit[0] / 60 if fit else None,
        "sources": fit[1] if fit else locales,
        "whole": whole,
        "source_epochs_per_minute": locales * stage["epochs"] / (stage["seconds"] / 60) if whole else None,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="studies/mini", help="the study's MU_ROOT (the after run)")
    ap.add_argument("--before", default=BEFORE, help="the commit whose collected mini run is the before run")
    ap.add_argument("--locales", type=int, default=51)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    shown = subprocess.run(
        ["git", "show", f"{a.before}:docs/results/mini/timings.json"], cwd=REPO, check=True, capture_output=True
    )
    before = [
        row("before", f"commit {a.before}", s, a.locales, None) for s in stages(json.loads(shown.stdout)["study"])
    ]
    root = Path(a.root).resolve()
    timings = root / "reports" / "study" / "mini" / "timings.json"
    if not timings.is_file():
        raise SystemExit(f"{timings} is missing: run `make study` (MU_ROOT={root}) first")
    after = []
    for s in stages(json.loads(timings.read_text())):
        seed_root = root if s["seed"] is None else root / "seeds" / f"s{s['seed']}"
        fit = fine_tuning(seed_root / "models" / "mini", s["workers"])
        after.append(row("after", "this checkout's study", s, a.locales, fit))
    paths.write_json(Path(a.out), {"before_commit": a.before, "root": str(root), "rows": before + after})
    for r in before + after:
        print(r["run"], r["stage"], f"{r['minutes']:.1f} min", "whole" if r["whole"] else "resume")


if __name__ == "__main__":
    main()
