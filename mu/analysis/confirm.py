"""The confirmatory analysis: the hypotheses of the pre-registration (``params/preregistration.yaml``) tested
as registered, on the per-item results of every fine-tuning seed's run.

For each hypothesis (A vs B, superiority / non-inferiority / equivalence) and each registered seed, the
targets × items matrices of A and B on the registered confirmatory targets are read from that seed's records
(``mu.analysis.aggregate.collect``: rows with per-item results, the zero-shot / oracle rows from the N×N
matrix's per-item file) and tested with ``mu.analysis.inference.run_family``: the sign-flip test with item
and target clusters, the two-way bootstrap interval, Holm over the one registered family of hypotheses ×
seeds. A test that cannot run (a system the protocol has not determined, a seed or target without results)
counts as p = 1 in the family, so a missing test never makes the others easier to pass.

A hypothesis is "supported" only if its adjusted test rejects in every seed with the same sign, the claim's
(superiority: A > B; non-inferiority / equivalence: the margin test passes in every seed); else "not
supported", with the reason. Everything else notebook 06 reports is exploratory.

* ``load``: the pre-registration; ``resolve_systems``: its system roles -> the systems' names in the records;
* ``analyse``: the family and the verdicts from ``{seed: {system: targets × items frame}}`` (no files read);
* ``report``: all of it from the seeds' runs, with a Markdown section; ``write``: confirmatory.md / .csv.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mu.analysis import aggregate, inference, itemwise, seeds, stats, summary
from mu.core import paths, protocol
from mu.core import report as mu_report

PREREGISTRATION = "params/preregistration.yaml"
# A system role's description starts with the system's name (``<family>/<...>``); a role chosen later names the
# protocol knob that records the choice ("recorded in protocol.md as 03.confirmatory_merge").
_SYSTEM = re.compile(r"^([a-z][\w-]*(?:/[\w.<>-]+)+)")
_KNOB = re.compile(r"\bas (\d\d\.[\w.]+)")
STUDENT_INIT = "04.distill.init"  # the student's init, recorded by mu.combine.selection_student
TEST_COLUMNS = ["hypothesis", "seed", "system_a", "system_b", "kind", "delta", "n_targets", "n_items"]
TEST_COLUMNS += ["mean_diff", "ci_low", "ci_high", "items_favouring_a", "targets_favouring_a", "p_value", "p_holm"]
TEST_COLUMNS += ["rejects", "note"]


def load(path: str | os.PathLike = PREREGISTRATION) -> dict[str, Any]:
    """The pre-registration (a relative path is the checkout's, ``mu.core.paths.source_dir``), checked."""
    p = paths.source_dir(path)
    reg = yaml.safe_load(p.read_text(encoding="utf-8"))
    missing = [k for k in ("seeds", "systems", "tests", "hypotheses") if k not in (reg or {})]
    if missing:
        raise ValueError(f"{p}: not a pre-registration, lacks {missing}")
    for h in reg["hypotheses"]:
        unknown = [r for r in (h["a"], h["b"]) if r not in reg["systems"]]
        if unknown or h["kind"] not in inference.KINDS:
            raise ValueError(f"{p}: hypothesis {h['id']}: unknown systems {unknown} or kind {h['kind']!r}")
    return {**reg, "path": str(p), "sha256": mu_report.sha256(p)}


def settings(reg: Mapping[str, Any]) -> dict[str, Any]:
    """alpha, bootstrap replicates, flips and interval level, as the registration's tests section states them."""
    tests = reg["tests"]

    def number(key: str, pattern: str, default: float) -> float:
        found = re.search(pattern, str(tests.get(key, "")))
        return float(found.group(1)) if found else default

    return {
        "alpha": float(tests.get("alpha", 0.05)),
        "n_boot": int(number("interval", r"(\d+) replicates", 2000)),
        "n_perm": int(number("test", r"(\d+) flips", 2000)),
        "level": number("interval", r"(\d+(?:\.\d+)?)%", 95) / 100,
    }


def _choice(knob: str, recorded: Mapping[str, Any]) -> Any:
    rec = recorded.get(knob)
    return None if rec is None else rec["value"]


def resolve_systems(
    reg: Mapping[str, Any], recorded: Mapping[str, Any], available: Sequence[str] = ()
) -> dict[str, tuple[str | None, str]]:
    """``{role: (system or None, how it was resolved)}`` for every role a hypothesis names. ``recorded``: the
    protocol's choices (``mu.core.protocol.load``); ``available``: systems found in the records, used only
    for a name with a placeholder the protocol has not filled (a unique match, else not determined)."""
    roles = dict.fromkeys(r for h in reg["hypotheses"] for r in (h["a"], h["b"]))
    out = {}
    for role in roles:
        text = " ".join(str(reg["systems"][role]).split())
        named, knob = _SYSTEM.match(text), _KNOB.search(text)
        if named and "<init>" in named.group(1):
            template = named.group(1)
            init = _choice(STUDENT_INIT, recorded)
            if init is not None:  # mu.combine.distill.name: a student from the linear merge carries no suffix
                out[role] = (
                    template.replace("-from_<init>", "" if init == "linear" else f"-from_{init}"),
                    STUDENT_INIT,
                )
                continue
            pattern = re.compile(re.escape(template).replace(re.escape("-from_<init>"), "(-from_[^/]+)?") + "$")
            hits = sorted(s for s in available if pattern.match(s))
            out[role] = (
                (hits[0], "the one match in the records") if len(hits) == 1 else (None, f"{STUDENT_INIT}: not recorded")
            )
        elif named:
            out[role] = (named.group(1).rstrip(":"), "registered name")
        elif knob:
            value = _choice(knob.group(1), recorded)
            system = None if value is None else (value if "/" in str(value) else f"merge/{value}/average")
            out[role] = (
                system,
                knob.group(1) if value is not None else f"not determined: no protocol record {knob.group(1)}",
            )
        else:
            out[role] = (None, "not determined: the registration names no system")
    return out


_STUDENT = re.compile(
    r"^adapted/distilled-(?P<method>[a-z_]+)-adapt(?P<split>[a-z]+)(?:-from_<init>)?/(?P<mode>[\w-]+)$"
)


def check_student_settings(reg: Mapping[str, Any], p04: Mapping[str, Any], where: str) -> None:
    """A ValueError when notebook 04's parameters ``p04`` (``where``: their file and profile) could distil a
    student other than the registered one: its teacher ensemble, weighting and adaptation split are fixed by
    the registration's ``systems.student`` name, while 04 chooses a teacher among every ensemble it runs
    unless ``distill_teachers`` names one. Run before the study, so the hypotheses can find their student."""
    roles = {r for h in reg["hypotheses"] for r in (h["a"], h["b"])}
    if "student" not in roles:
        return
    text = " ".join(str(reg["systems"]["student"]).split())
    system = _SYSTEM.match(text)
    named = _STUDENT.match(system.group(1)) if system else None
    if not named:
        raise ValueError(f"{reg['path']}: systems.student {text!r} does not name a distilled student")
    want = f"{named['method']}/{named['mode']}"
    offered = (
        list(p04["distill_teachers"])
        if p04.get("distill_teachers") is not None
        else [f"{m}/{mode}" for mode in p04["modes"] for m in p04["methods"]]
    )
    wrong = []
    if not p04.get("distill"):
        wrong.append("distill is false")
    if offered != [want]:
        wrong.append(f"the teacher is chosen among {offered}, not fixed: set distill_teachers: [{want}]")
    if p04.get("adapt_split") != named["split"]:
        wrong.append(f"adapt_split is {p04.get('adapt_split')!r}, the registered student adapts on {named['split']!r}")
    if wrong:
        raise ValueError(
            f"{where} would not distil the registered student ({reg['path']}: systems.student "
            f"{named.group(0)}): " + "; ".join(wrong)
        )


def _pair(frames: Mapping[str, pd.DataFrame], a: str | None, b: str | None, targets: Sequence[str]) -> tuple:
    """(A, B arrays on ``targets`` × the union of their items, or None, why not)."""
    for s in (a, b):
        if s is None:
            return None, "a system is not determined"
        if s not in frames:
            return None, f"no per-item results for {s}"
        lacking = sorted(set(targets) - set(frames[s].index))
        if lacking:
            return None, f"{s} lacks targets {lacking}"
    items = frames[a].columns.union(frames[b].columns)
    fa, fb = (frames[s].reindex(index=list(targets), columns=items) for s in (a, b))
    keep = (fa.notna() & fb.notna()).any(axis=0)  # items both systems have on some target
    return (fa.loc[:, keep].to_numpy(), fb.loc[:, keep].to_numpy()), ""


def analyse(
    reg: Mapping[str, Any],
    by_seed: Mapping[int, Mapping[str, pd.DataFrame]],
    systems: Mapping[str, tuple[str | None, str]],
    targets: Sequence[str],
    *,
    seed: int = 42,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(tests: one row per hypothesis × registered seed, verdicts: one row per hypothesis) from
    ``{seed: {system: targets × items frame}}`` (a seed absent: not tested). Holm over every registered
    hypothesis × seed (a test not run counts as p = 1)."""
    cfg = settings(reg)
    hyps, arrays, rows = [], {}, []
    for h in reg["hypotheses"]:
        (a, _), (b, _) = systems[h["a"]], systems[h["b"]]
        for s in reg["seeds"]:
            name = f"{h['id']}@{s}"
            got, why = _pair(by_seed[s], a, b, targets) if s in by_seed else (None, "no results")
            row = {"hypothesis": h["id"], "seed": s, "system_a": a, "system_b": b, "kind": h["kind"]}
            rows.append({**row, "delta": h.get("delta"), "note": why, "p_value": np.nan})
            if got is not None:
                arrays[name + ":a"], arrays[name + ":b"] = got
                hyps.append(inference.Hypothesis(name, name + ":a", name + ":b", h["kind"], h.get("delta")))
    tests = pd.DataFrame(rows)
    if hyps:
        fam = inference.run_family(
            hyps, arrays, alpha=cfg["alpha"], n_perm=cfg["n_perm"], n_boot=cfg["n_boot"], seed=seed, level=cfg["level"]
        ).set_index("name")
        for k, r in tests.iterrows():
            name = f"{r['hypothesis']}@{r['seed']}"
            if name in fam.index:
                f = fam.loc[name]
                tests.loc[k, ["n_targets", "n_items"]] = list(arrays[name + ":a"].shape)
                for c in ("mean_diff", "ci_low", "ci_high", "items_favouring_a", "targets_favouring_a", "p_value"):
                    tests.loc[k, c] = f[c]
    tests = tests.reindex(columns=TEST_COLUMNS)
    tests["p_holm"] = stats.holm(tests["p_value"].fillna(1.0).to_numpy(dtype=float))
    tests["rejects"] = tests["p_value"].notna() & (tests["p_holm"] < cfg["alpha"])
    verdicts = pd.DataFrame([_verdict(h, tests[tests["hypothesis"] == h["id"]], systems) for h in reg["hypotheses"]])
    return tests, verdicts


def _verdict(h: Mapping[str, Any], mine: pd.DataFrame, systems: Mapping[str, tuple[str | None, str]]) -> dict:
    out = {"hypothesis": h["id"], "claim": h["claim"], "kind": h["kind"], "delta": h.get("delta")}
    out.update(system_a=systems[h["a"]][0], system_b=systems[h["b"]][0])
    untested = mine[mine["p_value"].isna()]
    if len(untested):
        why = sorted({f"seed {r.seed}: {r.note}" for r in untested.itertuples()})
        undetermined = [f"{r}: {systems[r][1]}" for r in (h["a"], h["b"]) if systems[r][0] is None]
        return {**out, "verdict": "not supported", "reason": "not tested: " + "; ".join(undetermined or why)}
    signs = set(np.sign(mine["mean_diff"]))
    if not mine["rejects"].all():
        failed = ", ".join(str(s) for s in mine.loc[~mine["rejects"], "seed"])
        return {**out, "verdict": "not supported", "reason": f"the adjusted test does not reject in seed(s) {failed}"}
    if h["kind"] == "superiority" and signs != {1.0}:
        which = "the sign differs across seeds" if len(signs) > 1 else "B > A in every seed (the opposite)"
        return {**out, "verdict": "not supported", "reason": which}
    passes = "the margin test passes" if h["kind"] != "superiority" else "rejects with the claim's sign (A > B)"
    return {**out, "verdict": "supported", "reason": f"{passes} in all {len(mine)} seeds"}


def verdicts_of(tests: pd.DataFrame) -> pd.DataFrame:
    """The verdict and its reason per hypothesis of a written ``confirmatory.csv`` (``write``), which records every
    test and its hypothesis' verdict but not the reason: the same rule (``_verdict``) on its rows, so a reader
    of the file (``mu.publish.docs_confirm``) never restates it. A system the file leaves empty was not
    determined; the tests' notes say why."""
    out = []
    for hid, mine in tests.groupby("hypothesis", sort=False):
        first = mine.iloc[0]
        h = {"id": hid, "claim": first.get("claim"), "kind": first["kind"], "delta": first.get("delta")}
        named = {r: first[f"system_{r}"] for r in ("a", "b")}
        # an undetermined system's resolution is not in the file: the tests' notes carry it instead
        systems = {r: (v if isinstance(v, str) and v else "", "") for r, v in named.items()}
        out.append(_verdict({**h, "a": "a", "b": "b"}, mine, systems))
    return pd.DataFrame(out)


def report(
    profile: str,
    preregistration: str | os.PathLike = PREREGISTRATION,
    *,
    targets: Sequence[str],
    tuning_targets: Sequence[str] = (),
    seed: int = 42,
) -> dict[str, Any]:
    """The confirmatory analysis of ``profile``'s seeds' runs (``mu.analysis.seeds.roots``) on the registered
    confirmatory ``targets``: ``{"registration", "systems", "targets", "tests", "verdicts", "notes",
    "markdown", "inputs"}``."""
    reg = load(preregistration)
    overlap = sorted(set(targets) & set(tuning_targets))
    if not targets or overlap:
        raise ValueError(
            f"confirmatory targets: give them, none a tuning target (got {list(targets)}, overlap {overlap})"
        )
    notes = []
    declared = re.search(r"\((\d+) targets\)", str(reg.get("targets", {}).get("confirmatory", "")))
    if declared and int(declared.group(1)) != len(targets):
        notes.append(f"{len(targets)} targets given, the registration declares {declared.group(1)}: a deviation")
    by_seed, inputs = {}, {"preregistration": {"path": reg["path"], "sha256": reg["sha256"]}}
    for s, root in seeds.roots(profile, reg["seeds"]).items():
        nxn = root / "reports" / "02_training" / profile / "evaluation_matrix.csv"
        if not nxn.is_file():
            notes.append(f"seed {s}: no results under {root}")
            continue
        got = aggregate.collect(profile, reports=root / "reports", nxn=nxn, tuning_targets=tuning_targets)
        by_seed[s] = itemwise.matrices(got["rows"][got["rows"]["target"].isin(list(targets))])
        notes += [f"seed {s}: {n}" for n in got["notes"]]
        inputs[f"seed {s}"] = {"path": str(root / "reports"), "records": len(got["inputs"])}
    available = sorted({k for frames in by_seed.values() for k in frames})
    systems = resolve_systems(reg, protocol.load(profile), available)
    tests, verdicts = analyse(reg, by_seed, systems, targets, seed=seed)
    result = {"registration": reg, "systems": systems, "targets": list(targets), "tests": tests}
    result.update(verdicts=verdicts, notes=notes, inputs=inputs)
    result["markdown"] = markdown(result)
    return result


def markdown(result: Mapping[str, Any]) -> str:
    """The confirmatory section: the verdicts, every test of the family, how they were made."""
    reg, tests = result["registration"], result["tests"]
    cfg = settings(reg)
    shown = tests.assign(
        ci=[
            f"[{a:+.3f}, {b:+.3f}]" if np.isfinite(a) else summary.MISSING
            for a, b in zip(tests["ci_low"], tests["ci_high"])
        ],
        **{c: [f"{p:.4g}" if np.isfinite(p) else summary.MISSING for p in tests[c]] for c in ("p_value", "p_holm")},
        **{c: [f"{v:.0f}" if np.isfinite(v) else summary.MISSING for v in tests[c]] for c in ("n_targets", "n_items")},
    )
    cols = ["hypothesis", "seed", "n_targets", "n_items", "mean_diff", "ci", "items_favouring_a", "targets_favouring_a"]
    lines = [
        f"Pre-registered in `{Path(reg['path']).name}` (version {reg.get('version')}, registered "
        f"{reg.get('registered')}, sha256 `{reg['sha256'][:12]}`). Each hypothesis is tested in each fine-tuning "
        f"seed ({', '.join(map(str, reg['seeds']))}) on the {len(result['targets'])} confirmatory targets "
        f"({', '.join(result['targets'])}): the targets × items matrix of A − B (correct predictions), the "
        f"sign-flip test with target and item clusters ({cfg['n_perm']} flips, two-sided; non-inferiority / "
        f"equivalence: its one-sided tests at the margin), the two-way bootstrap interval over targets and items "
        f"({cfg['n_boot']} replicates, {cfg['level']:.0%}), Holm over all {len(tests)} hypothesis × seed tests "
        f"(one not run counts as p = 1), alpha {cfg['alpha']}. A hypothesis is supported only if its adjusted "
        "test rejects in every seed with the claim's sign. **Everything else in this summary is exploratory.**",
        "",
        summary.markdown_table(result["verdicts"], index=False),
        "",
        "Systems: "
        + "; ".join(f"{r} = `{s or 'not determined'}` ({how})" for r, (s, how) in result["systems"].items()),
        "",
        summary.markdown_table(shown[[*cols, "p_value", "p_holm", "rejects", "note"]], index=False),
    ]
    if result["notes"]:
        lines += [""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def write(result: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """``confirmatory.md`` (the section) and ``confirmatory.csv`` (every test, with its hypothesis' verdict)."""
    out = paths.resolve(out_dir)
    verdicts = result["verdicts"].set_index("hypothesis")
    table = result["tests"].assign(
        verdict=[verdicts.at[h, "verdict"] for h in result["tests"]["hypothesis"]],
        claim=[verdicts.at[h, "claim"] for h in result["tests"]["hypothesis"]],
    )
    return {
        "confirmatory.md": paths.write_text(
            out / "confirmatory.md", "# Confirmatory hypotheses\n\n" + result["markdown"]
        ),
        "confirmatory.csv": paths.write_text(out / "confirmatory.csv", table.to_csv(index=False)),
    }


def results(result: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-safe ``results`` for ``mu.core.report.save`` (NaN -> None)."""
    import json

    return {
        "verdicts": json.loads(result["verdicts"].to_json(orient="records")),
        "tests": json.loads(result["tests"].to_json(orient="records")),
        "systems": {r: s for r, (s, _) in result["systems"].items()},
        "targets": list(result["targets"]),
        "preregistration": result["inputs"]["preregistration"],
        "notes": list(result["notes"]),
    }
