"""The study's declared knobs: every value it uses that nothing measured, recorded in its protocol.

``mu.experiment.study.run`` records, before any notebook runs, each knob of each notebook it runs as
``<NN>.<parameter>`` (e.g. ``03.num_languages``) and its own knobs (subsampling, pretraining, the tuning
grid, the declared target sets, seeds) under ``study.*`` / ``pretrain.*`` / ``tune.*``, so
``protocol.md`` lists every knob. A value is ``declared`` (fixed before any result) with where it comes
from: a params file, a command-line default, a declared rule, or the user (``--set``: note "set by the
user"). A value something chose by measuring (``mu.learn.tuning``'s ``02.epochs`` / ``02.lr``, the adapted
family's selections) keeps its record: a declared record never replaces a measured one unless the user
set the knob.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from mu.core import paths, protocol

# Notebook parameters that are plumbing, not knobs: what runs where, never what a result depends on.
NOT_KNOBS = {
    "profile": "the profile name (injected by the runner)",
    "target_lang": "the target (injected by the runner)",
    "data": "the data folder (its content: study.source and the subsample sizes)",
    "models_dir": "where models are written",
    "base_model": "where the base is (its recipe: pretrain.*)",
    "report_to": "experiment tracking only",
    "keep_merged": "whether merged models stay on disk",
}
DECLARED = "none (fixed before any result)"
USER = "none (set on the command line)"


def knobs(parameters: Collection[str]) -> list[str]:
    """The parameters of a notebook that are knobs (every one but ``NOT_KNOBS``), in order."""
    return [p for p in parameters if p not in NOT_KNOBS]


def declare(
    profile: str, knob: str, value: Any, *, source: str, user: bool = False, replace: bool = False, note: str = ""
) -> bool:
    """Record ``knob`` as ``declared``; ``source`` says where the value comes from. Keeps a record made by a
    measurement (``dev``, ``label-free``, ``tuning-targets``) unless ``user`` set the knob or ``replace`` (the
    caller owns that measurement and did not make it this time). True if written."""
    path = protocol.protocol_dir(profile) / f"{knob}.json"
    if path.is_file() and paths.read_json(path).get("chosen_by") != "declared" and not (user or replace):
        return False
    text = "; ".join(t for t in ("set by the user (--set)" if user else source, note) if t)
    protocol.record(profile, knob, value, chosen_by="declared", data=USER if user else DECLARED, note=text)
    return True


def notebook(
    profile: str,
    prefix: str,
    values: Mapping[str, Any],
    *,
    source: str,
    user_set: Collection[str] = (),
    measured: Collection[str] = (),
    owned: Collection[str] = (),
    notes: Mapping[str, str] | None = None,
) -> list[str]:
    """Declare every knob of a notebook (``values``: its parameters as the study runs it) as ``<prefix>.<name>``,
    except ``measured`` ones (recorded by what measured them) that the user did not set. ``owned``: knobs only
    the caller measures: not measured this time, their old measured record is replaced. Returns the knob names."""
    names = []
    for name in knobs(values):
        knob = f"{prefix}.{name}"
        names.append(knob)
        if name in measured and name not in user_set:
            continue
        declare(
            profile,
            knob,
            values[name],
            source=source,
            user=name in user_set,
            replace=name in owned,
            note=(notes or {}).get(name, ""),
        )
    return names


def values(
    profile: str,
    found: Mapping[str, Any],
    *,
    source: str,
    user_set: Collection[str] = (),
    notes: Mapping[str, str] | None = None,
) -> None:
    """Declare each ``{knob: value}`` (the study's own knobs), ``source`` saying where the values come from."""
    for knob, value in found.items():
        declare(profile, knob, value, source=source, user=knob in user_set, note=(notes or {}).get(knob, ""))
