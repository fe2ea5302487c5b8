"""mu.study: the subsampled MASSIVE-layout folder (parallel ids, sizes, idempotent) and the CLI wiring."""

from __future__ import annotations

import pytest

from mu import __main__ as cli
from mu import data, study


def test_subsample_keeps_the_same_ids_in_every_locale(tmp_path):
    out = study.subsample("toy", tmp_path / "sub", ["de-DE", "sw-KE"], train=10, dev=None, test=5, seed=1)
    de = {s: data.load_split("de-DE", s, out) for s in data.SPLITS}
    sw = {s: data.load_split("sw-KE", s, out) for s in data.SPLITS}
    assert [len(de[s]) for s in data.SPLITS] == [10, len(data.load_split("de-DE", "dev", "toy")), 5]
    for s in data.SPLITS:
        assert de[s]["id"] == sw[s]["id"] and de[s]["label"] == sw[s]["label"]  # translations of each other
    full = data.load_split("de-DE", "train", "toy")
    rows = dict(zip(full["id"], zip(full["text"], full["label"])))
    assert all(rows[i] == (t, y) for i, t, y in zip(de["train"]["id"], de["train"]["text"], de["train"]["label"]))
    mtime = (out / "de-DE.jsonl").stat().st_mtime_ns
    assert study.subsample("toy", tmp_path / "sub", ["de-DE", "sw-KE"], train=10, dev=None, test=5, seed=1) == out
    assert (out / "de-DE.jsonl").stat().st_mtime_ns == mtime  # same arguments: kept
    other = study.subsample("toy", tmp_path / "sub2", ["de-DE"], train=10, dev=None, test=5, seed=2)
    assert data.load_split("de-DE", "train", other)["id"] != de["train"]["id"]  # the seed picks the subset
    with pytest.raises(ValueError, match="subsample sizes must be >= 1"):
        study.subsample("toy", tmp_path / "bad", ["de-DE"], train=0, dev=None, test=None)


def test_cli_has_the_study_commands():
    args = cli.parser().parse_args(["pretrain", "--objective", "mlm+tlm", "--steps", "10", "--hidden-size", "64"])
    assert (args.command, args.objective, args.steps, args.profile) == ("pretrain", "mlm+tlm", 10, "mini")
    assert study._pretrain_kwargs(args)["hidden_size"] == 64
    args = cli.parser().parse_args(["study", "--steps", "5", "--train", "100", "--set", "locales=[en-US, de-DE]"])
    assert (args.train, args.test, args.objective) == (100, 500, "mlm+tlm+align")
    kw = study._pretrain_kwargs(cli.parser().parse_args(["study"]))  # the study's encoder recipe by default
    assert (kw["lr"], kw["embedding_init"]) == (1e-3, "parallel-svd")
    assert cli.parser().parse_args(["study"]).steps == 3000 and study._pretrain_kwargs(args)["embedding_init"] == "parallel-svd"
    assert dict(args.extra) == {"locales": ["en-US", "de-DE"]}
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["pretrain", "--objective", "clm", "--steps", "1"])


@pytest.mark.slow
def test_study_run_subsamples_pretrains_and_runs_the_notebooks(mu_root):
    """``python -m mu study`` end to end at toy size: the mini profile narrowed to 3 toy locales."""
    from mu import paths, report

    toy3 = ["de-DE", "nl-NL", "sw-KE"]
    kwargs = dict(source="toy", train=48, dev=8, test=24, objective="mlm", steps=4, targets=["nl-NL"],
                  notebooks=["01", "02"], extra_params={"locales": toy3, "epochs": 1, "lr": 2e-3},
                  pretrain_kwargs=dict(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, batch_size=8, warmup_steps=1, dev_per_locale=4))
    rows = study.run("mini", **kwargs)
    assert set(rows["status"]) == {"done"} and list(rows["notebook"]) == ["01_similarity", "02_training"]
    assert len(data.load_split("sw-KE", "test", "cache/data/mini")) == 24
    record = paths.read_json(report.record_path("02_training", "mini", "training"))
    assert set(record["results"]["evaluation_matrix"]) == set(toy3)
    timings = paths.read_json(paths.reports_dir("study", "mini", "timings.json"))
    assert set(timings[-1]["seconds"]) == {"subsample", "pretrain", "notebook 01", "notebook 02"}
    again = study.run("mini", **kwargs)  # resumable: everything is done already
    assert set(again["status"]) == {"skipped"}
