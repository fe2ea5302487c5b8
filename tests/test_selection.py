"""The adapted family's protocol choices (mu.selection and its choices: mu.selection_distill,
mu.selection_student, mu.selection_adamerging) and what they rest on: teacher distributions
(mu.distill.teacher_probs), the held-out slice (mu.data.held_out), the student's label-free stopping
rule (mu.student), AdaMerging checkpoints. The selection is run with test splits that raise when read: it cannot
see them. Tiny toy models (the base perturbed), a few steps: seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mu.corpus.data
from mu import (
    distill,
    ensemble,
    merge,
    models,
    paths,
    protocol,
    selection_adamerging,
    selection_distill,
    selection_student,
    student,
)
from mu.merge import adamerging

MODELS_DIR = "models/test_selection"
LOCALES = ["de-DE", "nl-NL", "fr-FR", "es-ES"]
TUNING = ["de-DE", "nl-NL"]
SELECT = dict(num_languages=2, top_k=20, sinkhorn_iters=20)


@pytest.fixture(scope="module")
def sources(toy_base, perturbed_sources):
    return perturbed_sources(LOCALES, MODELS_DIR, seed=500, scale=0.2)


def test_teacher_probs_of_every_ensemble_method():
    rng = np.random.default_rng(0)
    logits = {"a": rng.normal(size=(6, 5)), "b": rng.normal(size=(6, 5)), "c": rng.normal(size=(6, 5))}
    w = {"a": 0.5, "b": 0.3, "c": 0.2}
    for method in ensemble.METHODS:
        p = distill.teacher_probs(method, logits, w, temperature=2.0)
        assert p.shape == (6, 5) and np.allclose(p.sum(axis=1), 1.0) and (p >= 0).all()
    soft = sum(w[k] * ensemble.softmax(z / 2.0) for k, z in logits.items())
    np.testing.assert_allclose(distill.teacher_probs("soft", logits, w, 2.0), soft)
    for method in ("soft", "uriel_logits"):  # the teacher's argmax is the ensemble's prediction
        assert (distill.teacher_probs(method, logits, w, 2.0).argmax(1) == ensemble.combine(method, logits, w)).all()
    votes = distill.teacher_probs("majority", logits, w, 2.0)
    assert set(np.round(votes.ravel() * 3, 9)) <= {0.0, 1.0, 2.0, 3.0}
    with pytest.raises(ValueError, match="unknown ensemble method 'mean'"):
        distill.teacher_probs("mean", logits, w, 2.0)


def test_held_out_slice_is_deterministic_disjoint_and_keeps_order():
    texts = [f"t{i}" for i in range(50)]
    fit, held = mu.data.held_out(texts, 0.1, seed=3)
    assert len(held) == 5 and len(fit) == 45 and sorted(fit + held, key=texts.index) == texts
    assert fit == sorted(fit, key=texts.index) and (fit, held) == mu.data.held_out(texts, 0.1, seed=3)
    assert mu.data.held_out(texts, 0.0) == (texts, [])
    assert len(mu.data.held_out(texts[:3], 0.01)[1]) == 1  # at least one when asked for some
    with pytest.raises(ValueError, match=r"held-out fraction must be in \[0, 1\)"):
        mu.data.held_out(texts, 1.0)


def test_student_stops_on_held_out_agreement_and_keeps_the_best_checkpoint(sources):
    texts = mu.data.unlabeled("af-ZA", "train", "toy", num_examples=80, seed=0)
    fit, held = mu.data.held_out(texts, 0.25, seed=0)
    w = {"de-DE": 0.5, "fr-FR": 0.5}
    probs = distill.teacher(
        "uriel_logits", fit + held, {k: sources[k] for k in w}, w, temperature=2.0, max_seq_length=32
    )
    model, tokenizer, log = student.fit_student(
        sources["nl-NL"],
        fit,
        probs[: len(fit)],
        held_out=held,
        held_out_probs=probs[len(fit) :],
        temperature=2.0,
        epochs=6,
        lr=3e-3,
        batch_size=16,
        eval_every=2,
        patience=2,
        max_seq_length=32,
        seed=1,
        progress=False,
    )
    curve = log["agreement_curve"]
    assert curve[0]["step"] == 0 and [c["step"] for c in curve] == sorted({c["step"] for c in curve})
    best = max(curve, key=lambda c: c["agreement"])  # earliest of the best
    assert (log["best_step"], log["best_agreement"]) == (best["step"], best["agreement"])
    if log["stopped"] == "patience":
        assert [c["agreement"] for c in curve[-2:]] and all(c["agreement"] <= best["agreement"] for c in curve[-2:])
        assert log["steps"] < 6 * -(-len(fit) // 16)
    # the model handed back is the best checkpoint, not the last step
    again = student.agreement(model, tokenizer, held, probs[len(fit) :].argmax(1), max_seq_length=32)
    assert again == pytest.approx(log["best_agreement"])


def test_adamerging_checkpoints_call_the_probe_with_the_current_merge(toy_base, sources):
    model, tokenizer = models.load_classifier(toy_base)
    sds = {k: models.load_state_dict(sources[k]) for k in ("de-DE", "fr-FR")}
    texts = mu.data.unlabeled("af-ZA", "train", "toy", num_examples=40, seed=0)
    seen = []
    probe = adamerging.entropy_probe(texts[:10])
    out = adamerging.fit(
        model,
        tokenizer,
        model.state_dict(),
        sds,
        {"de-DE": 0.5, "fr-FR": 0.5},
        texts,
        steps=6,
        lr=0.1,
        max_seq_length=32,
        progress=False,
        checkpoints=[0, 3, 6],
        probe=lambda s, predict: (seen.append(s), probe(s, predict))[1],
    )
    assert seen == [0, 3, 6] and [c["step"] for c in out["checkpoints"]] == [0, 3, 6]
    assert all(np.isfinite(c["held_out_entropy"]) for c in out["checkpoints"])
    with pytest.raises(ValueError, match="checkpoints must lie in"):
        adamerging.fit(
            model,
            tokenizer,
            model.state_dict(),
            sds,
            {"de-DE": 0.5, "fr-FR": 0.5},
            texts,
            steps=2,
            checkpoints=[3],
            probe=probe,
        )


class TextsOnly:
    """A train split whose texts can be read but whose labels raise."""

    def __init__(self, ds):
        self.texts = list(ds["text"])

    def __getitem__(self, column):
        if column == "text":
            return self.texts
        raise AssertionError(f"the selection read the {column!r} column of a train split")


@pytest.fixture()
def no_test_split(monkeypatch):
    """Every test split raises when loaded; train splits give texts only."""
    real = mu.data.load_split

    def guarded(locale, split, source="toy"):
        if split == "test":
            raise AssertionError(f"the selection loaded the test split of {locale}")
        return TextsOnly(real(locale, split, source)) if split == "train" else real(locale, split, source)

    monkeypatch.setattr(mu.data, "load_split", guarded)


def test_every_choice_is_made_without_a_test_split_and_recorded(sources, toy_base, no_test_split, monkeypatch):
    common = dict(models_dir=MODELS_DIR, data="toy", max_seq_length=32, **SELECT)
    teacher = selection_distill.choose_teacher(
        "sel", TUNING, methods=["soft", "uriel_logits"], modes=["similarity", "average"], **common
    )
    assert {r["target"] for r in teacher["evidence"]} == set(TUNING) and len(teacher["evidence"]) == 8
    student_kw = dict(
        lrs=[1e-3, 1e-2],
        base_model=toy_base,
        temperature=2.0,
        epochs=1,
        batch_size=32,
        eval_every=None,
        patience=1,
        held_out=0.1,
        **common,
    )
    lr_kw = dict(teacher_method=teacher["method"], mode=teacher["mode"], adapt_num_examples=64, **student_kw)
    lr = selection_student.choose_distill_lr("sel", TUNING, criterion="tuning-targets", **lr_kw)
    assert lr["lr"] in (1e-3, 1e-2) and {(r["target"], r["lr"]) for r in lr["evidence"]} == {
        (t, x) for t in TUNING for x in (1e-3, 1e-2)
    }
    ada = selection_adamerging.choose_adamerging(
        "sel",
        TUNING,
        granularities=["layer", "task"],
        steps=[2, 4],
        criterion="label-free",
        mode="similarity",
        constraint="simplex",
        lr=0.05,
        batch_size=16,
        held_out=0.1,
        base_model=toy_base,
        adapt_num_examples=64,
        **common,
    )
    assert {(r["granularity"], r["step"]) for r in ada["evidence"]} == {
        (g, s) for g in ("layer", "task") for s in (0, 2, 4)
    }
    curves = selection_adamerging.adamerging_curves(ada)
    assert set(curves["metric"]) == {"dev_accuracy", "dev_entropy", "held_out_entropy"}
    ranked = (
        curves[(curves["metric"] == "held_out_entropy") & (curves["step"] > 0)]
        .groupby(["granularity", "step"])["value"]
        .mean()
    )
    assert (ada["granularity"], ada["steps"]) == ranked.idxmin()
    recorded = protocol.load("sel")
    assert recorded["04.distill.teacher"]["value"] == f"{teacher['method']}/{teacher['mode']}"
    assert recorded["04.distill.teacher"]["chosen_by"] == "tuning-targets"
    assert recorded["04.distill.lr"]["chosen_by"] == "tuning-targets" and recorded["04.distill.lr"]["value"] == lr["lr"]
    assert recorded["03.adamerging.steps"]["chosen_by"] == "label-free"
    assert (recorded["04.distill.lr"]["grid"], recorded["03.adamerging.steps"]["grid"]) == ([1e-3, 1e-2], [2, 4])
    assert recorded["03.adamerging.granularity"]["grid"] == ["layer", "task"]  # the values each choice was made among
    assert recorded["04.distill.patience"]["chosen_by"] == "declared"
    # a rerun with the same arguments measures nothing (cached); other arguments measure again
    monkeypatch.setattr(student, "fit_student", lambda *a, **k: pytest.fail("measured again"))
    assert selection_student.choose_distill_lr("sel", TUNING, criterion="label-free", **lr_kw)["lr"] in (1e-3, 1e-2)
    assert protocol.load("sel")["04.distill.lr"]["chosen_by"] == "label-free"
    assert paths.reports_dir("study", "sel", "tuning", "distill_lr.json").is_file()
    # the smallest lr wins: a student whose lr tends to 0 is its init, so the init's own score is the grid's lr 0
    fake = [{"target": t, "lr": x, "dev_accuracy": 0.6 if x == 1e-3 else 0.5} for t in TUNING for x in (1e-3, 1e-2)]
    monkeypatch.setattr(selection_student.selection, "cached", lambda *a: fake)
    kw = dict(teacher_method="soft", mode="similarity", criterion="tuning-targets", init="iso_c", **student_kw)
    for init_score, grid, where in ((0.55, [0.0, 1e-3, 1e-2], ""), (0.65, [1e-3, 1e-2], "smallest")):
        assert selection_student.choose_distill_lr("sel", TUNING, init_score=init_score, **kw)["lr"] == 1e-3
        rec = protocol.load("sel")["04.distill.lr"]
        assert rec["grid"] == grid and protocol.edge(rec["value"], rec["grid"]) == where
        assert ("the best lr lies between 0 and 0.01" in rec["note"]) == (not where)
    assert rec["evidence"][0]["lr"] == 1e-3  # above the init: no lr-0 row, the choice stays an edge


def test_student_init_is_chosen_on_dev_or_label_free_and_its_merges_are_not_kept(
    sources, toy_base, no_test_split, monkeypatch
):
    common = dict(
        models_dir=MODELS_DIR,
        data="toy",
        max_seq_length=32,
        base_model=toy_base,
        teacher_method="soft",
        mode="similarity",
        held_out=0.1,
        temperature=2.0,
        adapt_num_examples=64,
        **{**SELECT, "num_languages": 3},
    )
    names = ["linear", "ties", "iso_c"]
    got = selection_student.choose_student_init(
        "init", TUNING, methods=[*names, "slerp"], criterion="tuning-targets", **common
    )
    assert {(r["target"], r["method"]) for r in got["evidence"]} == {(t, m) for t in TUNING for m in [*names, "slerp"]}
    assert all("exactly 2 sources" in r["note"] for r in got["evidence"] if r["method"] == "slerp")  # 3 sources here
    means = {m: np.mean([r["dev_accuracy"] for r in got["evidence"] if r["method"] == m]) for m in names}
    assert got["method"] == max(names, key=lambda m: (means[m], -names.index(m)))  # ties: the order given
    assert not any(
        paths.resolve(merge.merged_dir(MODELS_DIR, t, m, "similarity")).exists()
        for t in TUNING
        for m in ("ties", "iso_c")
    )  # scored, then deleted
    recorded = protocol.load("init")["04.distill.init"]
    assert (recorded["value"], recorded["chosen_by"]) == (got["method"], "tuning-targets")
    assert "dev split of the tuning targets" in recorded["data"] and "not applicable: slerp" in recorded["note"]
    monkeypatch.setattr(selection_student.merge, "merge_models", lambda *a, **k: pytest.fail("merged again"))
    free = selection_student.choose_student_init(
        "init", TUNING, methods=[*names, "slerp"], criterion="label-free", **common
    )
    assert free["evidence"] == got["evidence"]  # one grid, both scores: the other criterion merges nothing again
    agree = {m: np.mean([r["held_out_agreement"] for r in free["evidence"] if r["method"] == m]) for m in names}
    assert free["method"] == max(names, key=lambda m: (agree[m], -names.index(m)))
    assert all(0 <= a <= 1 for a in agree.values())
    # cached: a rerun merges nothing; one name is declared; adamerging is no starting point
    assert (
        selection_student.choose_student_init(
            "init", TUNING, methods=[*names, "slerp"], criterion="label-free", **common
        )
        == free
    )
    assert (
        selection_student.choose_student_init("init", [], methods=["iso_c"], criterion="tuning-targets", **common)[
            "method"
        ]
        == "iso_c"
    )
    assert protocol.load("init")["04.distill.init"]["chosen_by"] == "declared"
    with pytest.raises(ValueError, match="adamerging"):
        selection_student.choose_student_init(
            "init", TUNING, methods=["linear", "adamerging"], criterion="tuning-targets", **common
        )


def test_one_candidate_is_declared_and_bad_settings_are_clear_errors(sources, toy_base):
    common = dict(models_dir=MODELS_DIR, data="toy", max_seq_length=32, **SELECT)
    got = selection_distill.choose_teacher(
        "sel2", [], methods=["soft", "uriel_logits"], modes=["similarity"], only=["uriel_logits/similarity"], **common
    )
    assert (got["method"], got["mode"]) == ("uriel_logits", "similarity")
    assert protocol.load("sel2")["04.distill.teacher"]["chosen_by"] == "declared"
    with pytest.raises(ValueError, match=r"not among the ensembles"):
        selection_distill.choose_teacher(
            "sel2", TUNING, methods=["soft"], modes=["similarity"], only=["soft/oracle"], **common
        )
    with pytest.raises(ValueError, match="needs at least one declared tuning target"):
        selection_distill.choose_teacher("sel2", [], methods=["soft", "majority"], modes=["similarity"], **common)
    kw = dict(
        granularities=["layer", "task"],
        steps=[2],
        mode="similarity",
        constraint="simplex",
        lr=0.05,
        batch_size=16,
        base_model=toy_base,
        **common,
    )
    with pytest.raises(ValueError, match="selection criterion 'test'"):
        selection_adamerging.choose_adamerging("sel2", TUNING, criterion="test", held_out=0.1, **kw)
    with pytest.raises(ValueError, match="held-out fraction > 0"):
        selection_adamerging.choose_adamerging("sel2", TUNING, criterion="label-free", held_out=0.0, **kw)
    with pytest.raises(ValueError, match="granularity 'block'"):
        selection_adamerging.choose_adamerging(
            "sel2", TUNING, criterion="label-free", held_out=0.1, **{**kw, "granularities": ["block"]}
        )


def test_distilled_row_names_its_teacher_and_costs(sources, toy_base):
    w = {"de-DE": 0.6, "fr-FR": 0.4}
    rows = distill.evaluate_distilled(
        "af-ZA",
        {"similarity": w},
        teacher_method="uriel_logits",
        models_dir=MODELS_DIR,
        data="toy",
        base_model=toy_base,
        adapt_num_examples=None,
        held_out=0.1,
        max_seq_length=32,
        epochs=1,
        lr=1e-3,
        batch_size=32,
        patience=1,
    )
    (row,) = rows
    assert row["system"] == "adapted/distilled-uriel_logits/similarity"
    assert row["teacher"] == "ensemble/uriel_logits/similarity" and row["seconds"] > 0 and row["merge_seconds"] >= 0
    details = paths.read_json(paths.resolve(row["model"]) / distill.DETAILS_JSON)
    n = len(mu.data.unlabeled("af-ZA", "train", "toy", num_examples=None))
    assert details["texts"]["num_texts"] + details["texts"]["num_held_out"] == n  # all of the train split
    assert details["texts"]["num_held_out"] == round(0.1 * n) and details["agreement_curve"][0]["step"] == 0
    assert not distill.curves(rows, "agreement").empty
    assert torch.isfinite(torch.tensor(row["accuracy"]))
    (iso,) = distill.evaluate_distilled(
        "af-ZA",
        {"similarity": w},
        teacher_method="uriel_logits",
        init="iso_c",
        models_dir=MODELS_DIR,
        data="toy",
        base_model=toy_base,
        held_out=0.1,
        max_seq_length=32,
        epochs=1,
        lr=1e-3,
        batch_size=32,
        patience=1,
    )
    assert iso["system"] == "adapted/distilled-uriel_logits-from_iso_c/similarity"
    assert iso["init"] == "merge/iso_c/similarity" and row["init"] == "merge/linear/similarity"
    assert (
        paths.read_json(paths.resolve(iso["model"]) / distill.DETAILS_JSON)["inputs"]["student_init"]
        != paths.read_json(paths.resolve(row["model"]) / distill.DETAILS_JSON)["inputs"]["student_init"]
    )
    with pytest.raises(ValueError, match="adamerging"):
        distill.name("soft", init="adamerging")


def test_the_confirmatory_merge_is_the_best_data_free_one_on_dev_and_never_its_comparator(
    sources, toy_base, no_test_split
):
    from mu import selection_merge

    assert "linear" not in selection_merge.data_free() and "fisher_dataset" not in selection_merge.data_free()
    assert "adamerging" not in selection_merge.data_free() and "ties" in selection_merge.data_free()
    assert selection_merge.candidates(["linear", "ties", "regmean"]) == ["ties"]
    common = dict(models_dir=MODELS_DIR, data="toy", max_seq_length=32, base_model=toy_base, **SELECT)
    names = ["linear", "ties", "iso_c", "fisher_dataset"]
    got = selection_merge.choose_confirmatory_merge("h2", TUNING, methods=names, **common)
    assert {(r["target"], r["method"]) for r in got["evidence"]} == {(t, m) for t in TUNING for m in ("ties", "iso_c")}
    means = {m: np.mean([r["dev_accuracy"] for r in got["evidence"] if r["method"] == m]) for m in ("ties", "iso_c")}
    assert got["method"] == max(means, key=lambda m: (means[m], -["ties", "iso_c"].index(m)))
    assert not any(paths.resolve(merge.merged_dir(MODELS_DIR, t, m, "average")).exists() for t in TUNING for m in means)
    recorded = protocol.load("h2")["03.confirmatory_merge"]
    assert (recorded["value"], recorded["chosen_by"], recorded["grid"]) == (
        got["method"],
        "tuning-targets",
        ["ties", "iso_c"],
    )
    assert "dev split of the tuning targets" in recorded["data"] and "merge/linear/average" in recorded["note"]
    one = selection_merge.choose_confirmatory_merge("h2", [], methods=["linear", "iso_c"], **common)
    assert one["method"] == "iso_c" and protocol.load("h2")["03.confirmatory_merge"]["chosen_by"] == "declared"
    with pytest.raises(ValueError, match="at least one candidate"):
        selection_merge.choose_confirmatory_merge("h2", TUNING, methods=["linear"], **common)
