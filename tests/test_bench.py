"""Smoke test of the benchmark harness (``bench/``) on tiny models.

The measured subprocesses are checked on their own (peak RSS, the memory
watchdog, a real ``python -m bench.worker`` round trip); the end-to-end run then
executes the worker tasks and the mergekit CLI in this process, to stay fast.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bench import checkpoints, merging, proc, run, sizes, worker
from mu import paths


def _measured(out: dict, started: float) -> dict:
    return {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rc": 0,
        "status": "ok",
        "log": "",
        "sampled_peak_rss_mb": None,
        **out,
    }


@pytest.fixture
def in_process(monkeypatch):
    """``proc.worker`` and ``proc.run`` (the mergekit CLI) run in this process instead of a child."""

    def fake_worker(task, args, *, workdir, name, env=None, max_rss_bytes=None, timeout_s=600.0):
        with monkeypatch.context() as m:
            for key, value in (env or {}).items():
                m.setenv(key, value)
            started = time.perf_counter()
            return _measured(worker.TASKS[task](args), started)

    def fake_run(cmd, *, log, env=None, max_rss_bytes=None, timeout_s=600.0):
        from mergekit.scripts.run_yaml import main

        assert Path(cmd[0]).name == "mergekit-yaml", cmd
        started = time.perf_counter()
        main.main(list(cmd[1:]), standalone_mode=False)
        return _measured({}, started)

    monkeypatch.setattr(proc, "worker", fake_worker)
    monkeypatch.setattr(proc, "run", fake_run)


def test_proc_run_reports_the_childs_peak_rss_and_kills_past_the_limit(tmp_path):
    alloc = [sys.executable, "-c", "import time; x = b'x' * (300 * 2**20); time.sleep(0.6)"]
    ok = proc.run(alloc, log=tmp_path / "ok.log")
    assert (ok["status"], ok["rc"]) == ("ok", 0)
    assert ok["peak_rss_mb"] >= 300 and ok["wall_s"] >= 0.6
    killed = proc.run(alloc, log=tmp_path / "big.log", max_rss_bytes=100 * 2**20)
    assert killed["status"].startswith("killed: RSS") and killed["rc"] != 0
    failed = proc.run([sys.executable, "-c", "raise SystemExit('boom')"], log=tmp_path / "fail.log")
    assert failed["rc"] == 1 and failed["status"].startswith("failed (rc 1)") and "boom" in failed["status"]


def test_worker_runs_as_its_own_process(mu_root):
    base, sources = checkpoints.build("tiny", 2)
    workdir = paths.cache_dir("bench", "test-worker")
    workdir.mkdir(parents=True, exist_ok=True)
    measured = merging.floor(base, sources, workdir=workdir, name="floor")
    assert measured["status"] == "ok", measured["status"]
    assert measured["bytes"] == {
        k: (f / "model.safetensors").stat().st_size for k, f in {**sources, "<base>": base}.items()
    }
    assert set(measured["warm_read_s"]) == set(measured["hash_s"]) == {*sources, "<base>"}
    assert measured["peak_rss_mb"] > 0


def test_bench_mergekit_methods_and_configs_are_the_catalogs_and_the_exporters(tmp_path):
    """One source of truth: the bench times mergekit for exactly the catalog's mergekit methods, on the YAML
    mu.build.export writes for a ``python -m mu merge`` with the bench's sources, weights, base and default knobs."""
    from mu.build import export
    from mu.merge import catalog

    assert set(merging.MERGEKIT) == {m.name for m in catalog.METHODS if m.mergekit} == set(export.MERGEKIT_METHODS)
    assert list(merging.MERGEKIT) == [m for m in merging.METHODS if m in merging.MERGEKIT]  # measuring order
    assert set(merging.MERGEKIT_WORK) == set(merging.MERGEKIT)  # each has its fitted peak estimate
    folders = {"de-DE": tmp_path / "a", "nl-NL": tmp_path / "b"}
    w = merging.weights(list(folders))
    assert sum(w.values()) == pytest.approx(1.0) and w["de-DE"] == pytest.approx(2 * w["nl-NL"])
    refs = {k: str(v) for k, v in folders.items()}
    for method in merging.MERGEKIT:
        mw = merging.weights_for(method, list(folders))
        text, notes = merging.mergekit_config(method, folders, mw, tmp_path / "base")
        base = str(tmp_path / "base") if method in catalog.USES_BASE else None
        want, want_notes = export.mergekit_config(method, refs, mw, catalog.resolve(method), base)
        assert yaml.safe_load(text) == want and notes == want_notes, method
    ties = yaml.safe_load(merging.mergekit_config("ties", folders, w, tmp_path / "base")[0])
    assert ties["base_model"] == str(tmp_path / "base") and ties["dtype"] == "float32"
    assert [m["parameters"]["density"] for m in ties["models"]] == [merging.TIES_DENSITY] * 2
    assert [m["parameters"]["weight"] for m in ties["models"]] == list(w.values())
    linear = yaml.safe_load(merging.mergekit_config("linear", folders, w, tmp_path / "base")[0])
    assert "base_model" not in linear and [m["model"] for m in linear["models"]] == [str(f) for f in folders.values()]
    # mergekit's Karcher mean takes no weights: with the bench's unequal ones there is no equivalent
    assert merging.weights_for("karcher", list(folders)) == {"de-DE": 0.5, "nl-NL": 0.5}
    none, why = merging.mergekit_config("karcher", folders, w, tmp_path / "base")
    assert none is None and "equally" in why[0]
    with pytest.raises(ValueError, match="linear"):
        merging.mergekit_config("tsv_m", folders, w, tmp_path / "base")
    with pytest.raises(ValueError, match="tiny"):
        sizes.check_size("huge")


# every method mergekit has, at the smallest N the bench would merge it at
SHARED = [(m, run._ns(m, [3])[0]) for m in merging.MERGEKIT]


@pytest.mark.parametrize("method,n", SHARED)
def test_mergekit_beside_mu_on_tiny_models_is_the_same_merge(in_process, mu_root, method, n):
    """For every shared method the bench runs mergekit's CLI on the exporter's YAML: both timings and peaks
    in the row, and the same tensors (DARE / DELLA: random masks differ, said instead of a number)."""
    from bench import summary
    from mu.build import export

    base, sources = checkpoints.build("tiny", 3)
    workdir = paths.cache_dir("bench", "test-mergekit", method)
    workdir.mkdir(parents=True, exist_ok=True)
    measured = merging.measure(
        method,
        base,
        dict(list(sources.items())[:n]),
        workdir=workdir,
        max_rss_bytes=2**40,
        deadline=time.perf_counter() + 300,
        device="cpu",
    )
    assert measured["mu"]["status"] == "ok" and measured["mergekit"]["status"] == "ok", measured
    row = summary.merge_row(measured, merging.floor_for(method, n, _FAKE_FLOOR), 1)
    assert row["mu_wall_s"] > 0 and row["mergekit_wall_s"] > 0 and row["mergekit_peak_rss_gb"] > 0
    assert row["mergekit_over_mu"] == pytest.approx(row["mergekit_wall_s"] / row["mu_wall_s"])
    if method in export.RANDOM_DROPS:
        assert row["max_abs_diff"] is None and row["diff_note"] == "random masks differ"
    else:
        assert row["max_abs_diff"] < 1e-6 and row["diff_note"] is None
    assert not list(workdir.glob("out-*")), "merge outputs must be removed"


_FAKE_FLOOR = {
    key: {k: 1.0 for k in [*checkpoints.SOURCE_LOCALES, "<base>"]}
    for key in ("first_read_s", "warm_read_s", "touch_s", "hash_s", "bytes")
} | {"write_s": 1.0}


def test_the_table_shows_mergekit_beside_every_method_and_reads_runs_from_before():
    """results.md's one merge table: floor kind and own floor, mergekit's time, mergekit / mu and both peaks; a
    run from before every shared method was timed (the committed results.json, one shared method's mergekit
    status set as such runs wrote it) renders with its gaps said."""
    from bench import summary
    from mu.publish import docs_bench

    old = paths.read_json(Path(__file__).resolve().parents[1] / "reports" / "bench" / "results.json")
    before = next(r for r in old["merge"]["rows"] if (r["method"], r["n"]) == ("task_arithmetic", 2))
    before["status"]["mergekit"] = summary.OLD_NOT_RUN
    table = summary.markdown(old)
    for col in ("floor kind", "own floor s", "mu / own floor", "mergekit wall s", "mergekit / mu", "mergekit peak GB"):
        assert f"| {col} |" in table, col
    lines = {(r.split("|")[1].strip(), r.split("|")[2].strip()): r for r in table.splitlines() if r.startswith("| ")}
    assert "not measured in this run" in lines[("2", "task_arithmetic")]
    assert "— (no such method)" in lines[("2", "tsv_m")] and "skipped" in lines[("5", "ties")]
    linear = next(r for r in old["merge"]["rows"] if (r["method"], r["n"]) == ("linear", 2))
    assert f"| {linear['mergekit_wall_s'] / linear['mu_wall_s']:.2f} |" in lines[("2", "linear")]
    assert "mergekit / mu" in docs_bench.bench_merge()


def test_merges_over_budget_are_recorded_as_skipped(monkeypatch, tmp_path):
    calls = []

    def fake_measure(method, base, chosen, **_):
        calls.append(len(chosen))
        time.sleep(0.05)
        tool = {"status": "ok", "wall_s": 50.0 * len(chosen), "peak_rss_mb": 100.0}
        return {
            "method": method,
            "n": len(chosen),
            "mu": tool,
            "mergekit": tool,
            "elapsed_s": 100.0 * len(chosen),
            "runs": {"mu": [tool], "mergekit": [tool]},
        }

    monkeypatch.setattr(merging, "measure", fake_measure)
    monkeypatch.setattr(merging, "mergekit_peak_estimate", lambda *_: (0.0, "no checkpoint here"))
    sources = {loc: tmp_path / loc for loc in checkpoints.SOURCE_LOCALES[:5]}
    skipped: list = []
    done = run._merges(
        "ties",
        [2, 5],
        tmp_path,
        sources,
        workdir=tmp_path,
        deadline=time.perf_counter() + 200,
        repeats=1,
        skipped=skipped,
        max_rss_bytes=2**40,
    )
    assert calls == [2] and [d["n"] for d in done] == [2]
    assert skipped == [{"method": "ties", "n": 5, "reason": skipped[0]["reason"]}]
    assert skipped[0]["reason"].startswith("predicted 250 s")  # mu alone: 50 s per source × 5


def test_mergekit_predicted_over_the_memory_limit_is_skipped_but_mu_runs(monkeypatch, mu_root):
    calls = []

    def fake_measure(method, base, chosen, *, mergekit, **_):
        calls.append((len(chosen), mergekit))
        mu = {"status": "ok", "wall_s": 1.0, "peak_rss_mb": 1e-3}
        mk = (
            {"status": "ok", "wall_s": 1.0, "peak_rss_mb": 1000.0 * len(chosen)}
            if mergekit == "run"
            else {"status": mergekit}
        )
        return {"method": method, "n": len(chosen), "mu": mu, "mergekit": mk, "runs": {"mu": [mu], "mergekit": [mk]}}

    monkeypatch.setattr(merging, "measure", fake_measure)
    base, sources = checkpoints.build("tiny", 5)

    def merges(method: str, limit: int) -> list:
        skipped: list = []
        done = run._merges(
            method,
            [2, 5],
            base,
            sources,
            workdir=base,
            deadline=time.perf_counter() + 600,
            repeats=1,
            skipped=skipped,
            max_rss_bytes=limit,
        )
        assert [d["n"] for d in done] == [2, 5] and not skipped
        return done

    merges("ties", 3 * 2**30)  # the estimate at N = 2 fits; N = 5 is predicted from the measured N = 2
    assert calls[0] == (2, "run") and calls[1][1].startswith("skipped: predicted peak")
    # before any mergekit run is measured, its peak is estimated from the checkpoint's shapes
    model = (base / "model.safetensors").stat().st_size
    ties, why = merging.mergekit_peak_estimate("ties", 2, base)
    linear, _ = merging.mergekit_peak_estimate("linear", 2, base)
    assert 4 * model < ties and 3 * model < linear < ties and "largest tensor" in why  # inputs, base, output
    calls.clear()
    merges("ties", int(ties) - 1)
    assert [n for n, _ in calls] == [2, 5] and all(mk.startswith("skipped: estimated peak") for _, mk in calls)


def test_bench_end_to_end_on_tiny_models(in_process, mu_root):
    out = paths.reports_dir("bench", "results-test.json")
    results = run.run(
        merge_size="tiny",
        eval_size="tiny",
        ns=[2, 3],
        ties_ns=[2],
        test_sizes=[16, 32],
        k=2,
        ensemble_size=16,
        budget_s=600,
        out=out,
        repeats=2,
        cold_read=False,
        other_methods=("dare_ties", "slerp", "tsv_m", "widen"),
        device="cpu",
    )
    assert paths.read_json(out)["settings"] == results["settings"]
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| 2 | linear |" in table and "| 2 | ties |" in table and "speedup" in table
    assert results["machine"]["cpu_count"] == os.cpu_count()

    rows = results["merge"]["rows"]
    assert [(r["method"], r["n"]) for r in rows] == [
        ("linear", 2),
        ("linear", 3),
        ("ties", 2),
        ("dare_ties", 2),
        ("slerp", 2),
        ("tsv_m", 2),
        ("widen", 2),
    ]
    assert results["merge"]["skipped"] == []
    raw = results["merge"]["raw"]
    assert [len(m["runs"]["mu"]) for m in raw] == [2, 2, 1, 1, 1, 1, 1]  # linear repeated, the others once
    assert raw[0]["mu"]["wall_s"] == min(r["wall_s"] for r in raw[0]["runs"]["mu"])
    for r in rows[:5]:  # linear, ties, dare_ties, slerp: every method mergekit has, beside it
        assert r["status"] == {"mu": "ok", "mergekit": "ok"}
        if r["method"] == "dare_ties":
            assert r["max_abs_diff"] is None and r["diff_note"] == "random masks differ"
        else:
            assert r["max_abs_diff"] < 1e-6  # mu and mergekit computed the same merge
        assert r["mu_over_mergekit"] == pytest.approx(r["mu_wall_s"] / r["mergekit_wall_s"])
        assert r["mergekit_over_mu"] == pytest.approx(r["mergekit_wall_s"] / r["mu_wall_s"])
    for r in rows:
        assert r["status"]["mu"] == "ok" and r["mu_device"] == "cpu"
        assert r["mu_over_floor"] == pytest.approx(r["mu_op_s"] / r["floor_read_s"])
        assert r["mu_over_io_floor"] == pytest.approx(r["mu_op_s"] / (r["floor_read_s"] + r["write_s"]))
        assert r["own_floor_s"] == pytest.approx(r["io_floor_s"] + r["compute_floor_s"])
        assert r["mu_over_own_floor"] == pytest.approx(r["mu_op_s"] / r["own_floor_s"])
    assert {r["method"]: r["floor_kind"] for r in rows} == {
        "linear": "io",
        "ties": "select",
        "dare_ties": "select",
        "slerp": "io",
        "tsv_m": "svd",
        "widen": "io",
    }
    assert all((r["compute_floor_s"] > 0) == (r["floor_kind"] != "io") for r in rows)
    assert results["merge"]["compute_floor"]["status"] == "ok" and "own floor" in table
    for r in rows[5:]:  # tsv_m, widen: mergekit has no such method
        assert r["status"]["mergekit"].startswith("not run") and r["mergekit_over_mu"] is None
    assert "| mergekit / mu |" in table and "random masks differ" in table and "— (no such method)" in table
    assert results["gpu"]["available"] == torch.cuda.is_available()
    assert results["gpu"]["available"] or "no GPU" in results["gpu"]["reason"]
    assert "GPU:" in table and "I/O floor" in table
    floor = results["merge"]["floor"]
    assert rows[1]["input_gb"] * 1e9 == pytest.approx(sum(list(floor["bytes"].values())[:3]))
    assert rows[2]["input_gb"] * 1e9 == pytest.approx(sum(floor["bytes"][k] for k in ["de-DE", "nl-NL", "<base>"]))
    assert rows[4]["input_gb"] * 1e9 == pytest.approx(sum(floor["bytes"][k] for k in ["de-DE", "nl-NL"]))
    assert not list(paths.cache_dir("bench", "runs", "tiny").glob("out-*")), "merge outputs must be removed"
    assert results["scaling"]["merge_s_per_model"]["linear"]["mu_op"]["points"] == 2

    ev = results["evaluation"]
    assert [s["n"] for s in ev["sizes"]] == [16, 32] and ev["n"] == 32
    assert ev["naive"]["argmax_agreement"] == 1.0 and ev["naive"]["max_abs_logit_diff"] < 1e-4
    assert ev["speedup"] == pytest.approx(ev["naive"]["naive_s"] / (ev["sizes"][-1]["mu_s"] + ev["fingerprint_s"]))
    assert ev["slope_s_per_1000"] is not None and ev["tokens"]["max"] <= 128

    en = results["ensemble"]
    assert (en["k"], en["n"]) == (2, 16) and en["recompute_s"] > 0 and en["cached_s"] > 0
    assert {t["met"] for t in results["targets"]} <= {True, False, None}
    assert any(t["target"].startswith("evaluation") for t in results["targets"])

    # --update: a method measured again replaces its rows, against the run's stored floor; pairwise ones at N = 2
    updated = run.update(["widen", "nearswap"], ns=[2, 3], out=out, device="cpu")
    assert paths.read_json(out)["merge"]["rows"] == updated["merge"]["rows"]
    again = updated["merge"]["rows"]
    assert [(r["method"], r["n"]) for r in again] == [
        ("linear", 2),
        ("linear", 3),
        ("ties", 2),
        ("dare_ties", 2),
        ("slerp", 2),
        ("tsv_m", 2),
        ("widen", 2),
        ("widen", 3),
        ("nearswap", 2),
    ]
    assert again[:6] == rows[:6] and all("updated" in r for r in again[6:])
    assert updated["merge"]["floor"] == floor and updated["settings"]["updated"][0]["methods"] == ["widen", "nearswap"]
    assert all(r["status"]["mu"] == "ok" for r in again)
    assert "| 3 | widen |" in out.with_suffix(".md").read_text(encoding="utf-8")


def test_own_floor_is_the_io_floor_plus_one_selection_or_svd_per_tensor_and_source():
    from bench import floors

    shapes = {
        "roberta.embeddings.word_embeddings.weight": (50, 8),
        "layer.0.dense.weight": (8, 16),
        "layer.0.dense.bias": (16,),
        "layer.1.dense.weight": (8, 16),
        "scale": (),
    }
    assert [floors.kind(m) for m in ("ties", "della", "ram", "tsv_m", "iso_c", "karcher", "linear")] == [
        "select",
        "select",
        "select",
        "svd",
        "svd",
        "io",
        "io",
    ]
    assert floors.ops("ties", 3, shapes) == {"50x8": 3, "8x16": 6, "16": 3, "": 3}  # every tensor, per source
    assert floors.ops("tsv_m", 3, shapes) == {"8x16": 6}  # matrices only: no embedding, no vector
    assert floors.ops("iso_c", 3, shapes) == {"8x16": 2}  # one SVD of the summed task vectors
    assert floors.ops("linear", 3, shapes) == {} and floors.ops("ties", 0, shapes) == {}
    measured = floors.measure(shapes, repeats=2, budget_s=0.05)
    assert set(measured["select"]) == {"50x8", "8x16", "16", ""} and set(measured["svd"]) == {"8x16"}
    assert all(v["s"] > 0 and 1 <= v["runs"] <= 2 for k in floors.KINDS for v in measured[k].values())
    assert measured["select"]["8x16"]["how"] in ("kthvalue", "partition") and "svd_1t_s" in measured["svd"]["8x16"]
    sel = measured["select"]
    ties = floors.of("ties", 3, 1.5, shapes, measured)
    assert ties["own_floor_s"] == pytest.approx(
        1.5 + 3 * (sel["50x8"]["s"] + 2 * sel["8x16"]["s"] + sel["16"]["s"] + sel[""]["s"])
    )
    assert ties["floor_ops"] == 15 and ties["floor_kind"] == "select"
    assert floors.of("linear", 3, 1.5, shapes, measured) == {
        "floor_kind": "io",
        "compute_floor_s": 0.0,
        "own_floor_s": 1.5,
        "floor_ops": 0,
    }
    with pytest.raises(ValueError, match="not measured"):
        floors.compute_s("tsv_m", 2, {**shapes, "layer.2.dense.weight": (4, 4)}, measured)
    with pytest.raises(ValueError, match="floor operation"):
        floors.op_seconds((2, 2), "sort")


def test_study_projection_from_unit_costs(tmp_path):
    """The study projection is arithmetic on measured units; MASSIVE files are cut to a test size."""
    import gzip
    import json

    from bench import study

    lines = [
        {"id": str(i), "locale": "sw-KE", "partition": p, "intent": "alarm_set", "utt": f"u {i}"}
        for i, p in enumerate(["train", "test", "test", "dev", "test"])
    ]
    with gzip.open(tmp_path / "sw-KE.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(x) for x in lines) + "\n")
    out = study.write_locale(tmp_path, "sw-KE", tmp_path / "cut", test_limit=2)
    kept = [json.loads(x) for x in (out / "sw-KE.jsonl").read_text().splitlines()]
    assert [x["partition"] for x in kept] == ["train", "test", "test", "dev"]
    with pytest.raises(ValueError, match="MASSIVE"):
        study.write_locale(tmp_path, "de-DE", tmp_path / "cut")

    unit = {"per_unit_s": 2.0, "fixed_s": 1.0}
    units = {"train_step": unit, "eval_example": unit, "fisher_example": unit, "regmean_example": unit}
    p = study.project(units, {"linear": 10.0, "ties": 20.0})
    s = study.STUDY
    steps = -(-study.TRAIN_UTTERANCES // s["batch_size"])
    eval_s = 1.0 + study.TEST_UTTERANCES * 2.0
    assert p["unit_s"]["fine-tune one locale"] == steps * s["epochs"] * 2.0
    assert p["unit_s"]["one N×N cell"] == eval_s
    assert p["hours"]["N×N 51×51 cells"] == pytest.approx(51 * 51 * eval_s / 3600)
    assert p["methods_counted"] == ["fisher_dataset", "fisher_simple", "linear", "regmean", "ties"]
    assert p["total_hours"] == pytest.approx(sum(p["hours"].values()))


def test_bench_methods_are_every_data_free_method_of_the_registry():
    from mu import merge as mm

    assert set(merging.METHODS) == set(mm.METHODS) - set(mm.STATISTICS)
    assert merging.METHODS[:2] == ("linear", "ties") and {"tsv_m", "iso_c", "iso_cts", "widen"} <= set(merging.METHODS)
    streamed = [m in mm.STREAMED for m in merging.METHODS[2:]]
    assert streamed == sorted(streamed, reverse=True)  # chunk-streamed first, whole-tensor methods last


def test_whole_tensor_methods_over_the_memory_limit_are_skipped_before_running(monkeypatch, mu_root):
    base, sources = checkpoints.build("tiny", 2)
    # streamed (fisher_simple too, given its chunks by mu.merge.stream): measured, then extrapolated
    assert merging.peak_estimate("ties", 2, base) is None and merging.peak_estimate("fisher_simple", 2, base) is None
    one, why = merging.peak_estimate("tsv_m", 2, base)
    model = 4.0 * sizes.num_parameters("tiny")
    assert model < one and "SVD" in why

    def fake_measure(method, base, chosen, **_):
        tool = {"status": "ok", "wall_s": 1.0, "peak_rss_mb": 1.0}
        return {"method": method, "n": len(chosen), "mu": tool, "mergekit": tool, "runs": {"mu": [tool]}}

    monkeypatch.setattr(merging, "measure", fake_measure)
    skipped: list = []
    done = run._merges(
        "tsv_m",
        [2],
        base,
        sources,
        workdir=base,
        deadline=time.perf_counter() + 600,
        repeats=1,
        skipped=skipped,
        max_rss_bytes=int(one) - 1,
    )
    assert done == [] and skipped[0]["reason"].startswith("estimated peak")
    done = run._merges(
        "tsv_m",
        [2],
        base,
        sources,
        workdir=base,
        deadline=time.perf_counter() + 600,
        repeats=1,
        skipped=skipped,
        max_rss_bytes=int(one) + 1,
    )
    assert [d["n"] for d in done] == [2] and len(skipped) == 1


def test_maketest_reads_counts_and_seconds_from_a_ci_log(tmp_path, monkeypatch):
    from bench import maketest

    log = (
        "created: 2/2 workers\n2 workers [714 items]\n...\n"
        "=========== 690 passed, 24 skipped, 7 warnings in 681.40s (0:11:21) ============\n"
    )
    assert maketest.parse(log) == {"pytest_s": 681.4, "passed": 690, "skipped": 24, "failed": 0, "workers": 2}
    failing = "== 2 failed, 688 passed, 1 error in 700.00s (0:11:40) ==\n"
    assert maketest.parse(failing)["failed"] == 3 and maketest.parse(failing)["workers"] is None
    with pytest.raises(ValueError, match="did not finish"):
        maketest.parse("collected 714 items\nKeyboardInterrupt\n")
    monkeypatch.setattr(maketest, "OUT", tmp_path / "make-test.json")
    got = maketest.record(log, wall_s=700.04, commit="abc1234", load_before="1-minute load average 0.10", rc=0)
    assert paths.read_json(tmp_path / "make-test.json") == got
    assert (got["wall_s"], got["commit"], got["exit_code"]) == (700.0, "abc1234", 0) and "681.40s" in got["log"]


def test_training_bench_counts_flops_as_its_report_states():
    import numpy as np

    from bench import training

    assert training.matmul_params() == 4 * (4 * 128 * 128 + 2 * 128 * 512) == 786_432
    one = 2 * 786_432 * 10 + 4 * 4 * 128 * 10**2 + 2 * (128 * 128 + 128 * 60)
    assert training.forward_flops(np.array([10])) == one
    assert training.forward_flops(np.array([3, 10]), width=10) == 2 * one
    floor = training.floor(np.array([10, 10]), 2, train=False)
    assert floor["seconds"] > 0 and floor["flops"] == 2 * one
    assert training.floor(np.array([10, 10]), 2, train=True)["flops"] == 3 * 2 * one


def test_every_method_above_its_floor_target_says_what_work_the_floor_leaves_out():
    """The reasons are the catalog's methods, and results.md gives one for every method above 2× its own floor."""
    from bench import floors, summary
    from mu.merge import catalog

    assert set(floors.BEYOND_FLOOR) <= {m.name for m in catalog.METHODS}
    old = paths.read_json(Path(__file__).resolve().parents[1] / "reports" / "bench" / "results.json")
    row = dict(old["merge"]["rows"][0], method="ties", mu_over_own_floor=summary.OWN_FLOOR_TARGET + 1)
    old["merge"]["rows"] = [row, dict(row, method="tsv_m", mu_over_own_floor=summary.OWN_FLOOR_TARGET - 0.5)]
    table = summary.markdown(old)
    assert f"* ties (N = {row['n']}: 3.0×): {floors.BEYOND_FLOOR['ties']}." in table
    assert "* tsv_m" not in table and "no reason stated" not in table


def test_notebook02_bench_tells_a_whole_stage_from_a_resume(tmp_path):
    from bench import notebook02

    entries = [
        {"workers": 2, "tuned": {"epochs": 12.0}, "stages": {"notebook 02": {"seconds": 300.0, "jobs": 1, "ran": 1}}},
        {"workers": 2, "tuned": {"epochs": 12.0}, "stages": {"notebook 02": {"seconds": 0.1, "jobs": 1, "ran": 0}}},
        {"workers": 2, "tuned": {"epochs": 12.0}, "stages": {"seed 43 notebook 02": {"seconds": 9.0, "partial": True}}},
        {"workers": 2, "tuned": {"epochs": 12.0}, "stages": {"seed 43 notebook 02": {"seconds": 3000.0, "ran": 1}}},
    ]
    got = notebook02.stages(entries)
    assert [(s["stage"], s["seed"], s["seconds"]) for s in got] == [
        ("notebook 02", None, 300.0),
        ("seed 43 notebook 02", 43, 3000.0),
    ]
    models = tmp_path / "models"
    for loc, runtime in [("en-US", 1000.0), ("de-DE", 1400.0)]:
        paths.write_json(
            models / f"xlm-roberta-base_massive_k_{loc}" / "training_args.json",
            {"log_history": [{"loss": 1.0}, {"train_runtime": runtime}]},
        )
    fit = notebook02.fine_tuning(models, 2)
    assert fit == (1200.0, 2)
    resumed, whole = (notebook02.row("after", "x", s, 2, fit) for s in got)
    assert not resumed["whole"] and resumed["source_epochs_per_minute"] is None
    assert whole["whole"] and whole["source_epochs_per_minute"] == 2 * 12.0 / 50.0
