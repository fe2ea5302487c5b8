"""The confirmatory tables for README.md and docs/ (``mu.publish.docs`` renders them between markers): the
pre-registered hypotheses of ``params/preregistration.yaml`` as the confirmatory run tested them
(``mu.analysis.confirm``), one row per hypothesis with its verdict and every seed's mean difference, interval
and Holm-adjusted p, the test as registered, and the answer in plain words: does the label-free student beat
the oracle, and how does it stand against joint training. All from the collected
``docs/results/<profile>/confirmatory.csv``; without it, a sentence saying it is not collected and no number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from mu.analysis import confirm
from mu.publish.collect import md_table, num, p_text, read_csv, results_path

FILE = "confirmatory.csv"


def _missing(profile: str) -> str | None:
    """The placeholder when the confirmatory run is not collected (no number in it), else None."""
    if results_path(profile, FILE).is_file():
        return None
    return (
        f"*The confirmatory run's results are not collected yet: `docs/results/{profile}/{FILE}` is not there. "
        f"After the confirmatory run: `python -m mu docs --collect {profile} --from <its MU_ROOT>`, "
        "then `python -m mu docs`.*"
    )


def _load(profile: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every test, the verdicts with their reasons), the verdict being the one the file records."""
    tests = read_csv(profile, FILE)
    verdicts = confirm.verdicts_of(tests).set_index("hypothesis")
    recorded = tests.groupby("hypothesis", sort=False)["verdict"].first()
    for h, v in recorded.items():
        if v != verdicts.at[h, "verdict"]:  # the file's own tests disagree with its verdict: say so, never hide it
            verdicts.at[h, "reason"] = f"as recorded; its tests give {verdicts.at[h, 'verdict']!r}: regenerate it"
            verdicts.at[h, "verdict"] = v
    return tests, verdicts


def _effect(r: Mapping[str, Any]) -> str:
    """One test: A − B [95% CI], Holm p; a test not run: why."""
    if pd.isna(r["p_value"]):
        return f"not run ({r['note']})" if isinstance(r["note"], str) and r["note"] else "not run"
    ci = f"[{num(r['ci_low'], 3, signed=True)}, {num(r['ci_high'], 3, signed=True)}]"
    return f"{num(r['mean_diff'], 3, signed=True)} {ci}, Holm p {p_text(r['p_holm'])}"


def _kind(r: Mapping[str, Any]) -> str:
    return r["kind"] if pd.isna(r.get("delta")) else f"{r['kind']}, δ = {float(r['delta']):g}"


def _test_line(tests: pd.DataFrame, profile: str) -> str:
    """How the tests were made, from the registration the checkout commits (and whether the run's differs)."""
    reg = confirm.load(confirm.PREREGISTRATION)
    cfg = confirm.settings(reg)
    seeds = ", ".join(str(s) for s in sorted(tests["seed"].unique()))
    targets = tests["n_targets"].max()
    items = f"{num(tests['n_items'].max(), 0)} test items" if pd.notna(tests["n_items"].max()) else "its test items"
    line = (
        f"*Test, as registered in `{confirm.PREREGISTRATION}` (version {reg.get('version')}):* per hypothesis "
        f"and fine-tuning seed ({seeds}), the targets × items matrix of A − B (correct predictions) on "
        f"{num(targets, 0)} confirmatory targets × {items}; the sign-flip test with target and item clusters "
        f"flipped independently ({cfg['n_perm']} flips, two-sided; non-inferiority: its one-sided test at the "
        f"margin δ), the two-way bootstrap {cfg['level']:.0%} interval over targets and items ({cfg['n_boot']} "
        f"replicates), Holm over all {len(tests)} hypothesis × seed tests (one not run counts as p = 1), alpha "
        f"{cfg['alpha']:g}. A hypothesis is supported only if its adjusted test rejects in every seed with the "
        "claim's sign. Everything else in these pages is exploratory."
    )
    section = results_path(profile, "confirmatory.md")
    ran = re.search(r"sha256 `([0-9a-f]+)`", section.read_text(encoding="utf-8")) if section.is_file() else None
    now = reg["sha256"]
    if ran and not now.startswith(ran.group(1)):
        line += (
            f" The run tested registration sha256 `{ran.group(1)}`; the committed one is `{now[:12]}`: a change "
            "after the run, a deviation."
        )
    return line


def confirmatory(profile: str) -> str:
    """One row per registered hypothesis: its claim, A − B, the kind of test, the verdict and why, and per seed
    the mean difference A − B with its two-way 95% interval and the Holm-adjusted p; then the test as registered."""
    missing = _missing(profile)
    if missing:
        return missing
    tests, verdicts = _load(profile)
    seeds = sorted(tests["seed"].unique())
    rows = []
    for h, v in verdicts.iterrows():
        mine = tests[tests["hypothesis"] == h].set_index("seed")
        first = mine.iloc[0]
        pair = " − ".join(
            f"`{s}`" if isinstance(s, str) and s else "not determined" for s in (first["system_a"], first["system_b"])
        )
        rows.append(
            [
                h,
                v["claim"],
                pair,
                _kind(first),
                f"**{v['verdict']}**: {v['reason']}",
                *[_effect(mine.loc[s]) if s in mine.index else "not in the file" for s in seeds],
            ]
        )
    head = ["hypothesis", "claim", "A − B", "test", "verdict"]
    head += [f"seed {s}: A − B [95% CI], Holm p" for s in seeds]
    return md_table(head, rows) + "\n\n" + _test_line(tests, profile)


def _hypothesis(reg: Mapping[str, Any], b: str, fallback: str) -> str:
    """The id of the registered hypothesis that sets the student against role ``b`` (else ``fallback``)."""
    ids = [h["id"] for h in reg["hypotheses"] if h["a"] == "student" and h["b"] == b]
    return ids[0] if ids else fallback


def _per_seed(mine: pd.DataFrame) -> str:
    return "; ".join(f"seed {r['seed']}: {_effect(r)}" for _, r in mine.sort_values("seed").iterrows())


def confirmatory_answer(profile: str) -> str:
    """In plain words with the numbers: whether the label-free student beats the oracle (the registration's
    student-vs-oracle hypothesis, H1) and how it stands against joint training on the same sources (H4)."""
    if _missing(profile):
        return (
            "*Whether the label-free student beats the oracle, and how it stands against joint training, is not "
            f"known yet: the confirmatory run's results are not collected (`docs/results/{profile}/{FILE}`).*"
        )
    tests, verdicts = _load(profile)
    reg = confirm.load(confirm.PREREGISTRATION)
    out = []
    h1 = _hypothesis(reg, "oracle", "H1")
    if h1 in verdicts.index:
        mine, v = tests[tests["hypothesis"] == h1], verdicts.loc[h1]
        student, oracle = mine.iloc[0]["system_a"], mine.iloc[0]["system_b"]
        said = (
            f"**Yes** ({h1} supported): the label-free student `{student}` beats the oracle `{oracle}` (the best "
            "single source, picked with each target's test labels)"
            if v["verdict"] == "supported"
            else f"**Not shown** ({h1} not supported: {v['reason']}): the label-free student `{student}` against "
            f"the oracle `{oracle}` (the best single source, picked with each target's test labels)"
        )
        out.append(f"- **Does the label-free single model beat the oracle?** {said}. A − B: {_per_seed(mine)}.")
    h4 = _hypothesis(reg, "joint_similarity", "H4")
    if h4 in verdicts.index:
        mine, v = tests[tests["hypothesis"] == h4], verdicts.loc[h4]
        joint, delta = mine.iloc[0]["system_b"], mine.iloc[0]["delta"]
        margin = f"{float(delta):g} accuracy" if pd.notna(delta) else "the registered margin"
        said = (
            f"it is **no worse than** `{joint}` by more than {margin} ({h4} supported, non-inferiority)"
            if v["verdict"] == "supported"
            else f"it is **not shown** to be worse than `{joint}` by less than {margin} ({h4} not supported: "
            f"{v['reason']})"
        )
        out.append(f"- **Against joint training on the same sources' labeled data**, {said}. A − B: {_per_seed(mine)}.")
    return (
        "\n".join(out)
        or "*The collected confirmatory file tests neither the student against the oracle nor against joint training.*"
    )


TABLES: dict[str, Callable[..., str]] = {"confirmatory": confirmatory, "confirmatory-answer": confirmatory_answer}
