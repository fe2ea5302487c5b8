import numpy as np
import pytest
import torch

import mu.corpus.data as data
import mu.learn.evaluate as evaluate
import mu.learn.models as models
import mu.learn.train as train
from mu import paths, report


def test_toy_training_is_clearly_above_chance_on_own_language(toy_sources, toy_train_args):
    for loc, path in toy_sources.items():
        logits, labels = evaluate.logits(path, loc, data="toy", max_seq_length=toy_train_args["max_seq_length"])
        chance = 1 / len(np.unique(labels))  # toy intents are balanced
        assert evaluate.metrics(logits, labels)["accuracy"] > 5 * chance, loc


def test_transfer_within_family_beats_across_families(toy_sources, toy_train_args):
    def acc(source, target):
        return evaluate.evaluate(
            toy_sources[source], target, data="toy", max_seq_length=toy_train_args["max_seq_length"]
        )["accuracy"]

    assert acc("de-DE", "nl-NL") > acc("de-DE", "fr-FR")
    assert acc("fr-FR", "es-ES") > acc("fr-FR", "nl-NL")


def test_training_record_and_resume(toy_sources, toy_base, toy_train_args):
    out = toy_sources["de-DE"]
    record = paths.read_json(out / "training_args.json")
    params = record["params"]
    assert params["locale"] == "de-DE"
    assert params["base_sha256"] == report.sha256(toy_base / models.WEIGHTS_FILE)
    assert params["train_sha256"] == data.fingerprint(data.load_split("de-DE", "train", "toy"))
    assert {k: params[k] for k in ("epochs", "batch_size", "lr", "max_seq_length", "seed")} == {
        k: toy_train_args[k] for k in ("epochs", "batch_size", "lr", "max_seq_length", "seed")
    }
    assert "classifier head" in record["classifier_head"] and record["versions"]["torch"]
    mtime = (out / models.WEIGHTS_FILE).stat().st_mtime_ns
    assert train.train_locale("de-DE", **toy_train_args) == out  # same parameters: nothing to do
    assert (out / models.WEIGHTS_FILE).stat().st_mtime_ns == mtime


def test_changed_parameters_retrain(toy_base, toy_train_args, tmp_path):
    args = {**toy_train_args, "models_dir": tmp_path, "epochs": 1}
    first = train.train_locale("sw-KE", **args)
    mtime = (first / models.WEIGHTS_FILE).stat().st_mtime_ns
    second = train.train_locale("sw-KE", **{**args, "lr": 1e-3})
    assert second == first
    assert (second / models.WEIGHTS_FILE).stat().st_mtime_ns != mtime
    assert paths.read_json(second / "training_args.json")["params"]["lr"] == 1e-3
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporaries left


def test_fit_is_deterministic_and_can_be_called_repeatedly(toy_base, tmp_path):
    ds = data.load_split("it-IT", "train", "toy")
    kwargs = {"epochs": 1, "batch_size": 16, "lr": 2e-3, "max_seq_length": 64, "seed": 7}
    weights = []
    for run in range(2):
        model, tokenizer = models.load_classifier(toy_base)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        first = train.fit(model, tokenizer, ds, output_dir=tmp_path / f"r{run}", **kwargs)
        after_one = {k: v.clone() for k, v in model.state_dict().items()}
        second = train.fit(model, tokenizer, ds, output_dir=tmp_path / f"r{run}", **kwargs)
        assert not model.training
        assert first["global_step"] == second["global_step"] == -(-len(ds) // kwargs["batch_size"])
        head = "classifier.out_proj.weight"
        assert not torch.equal(before[head], after_one[head])
        assert not torch.equal(after_one[head], model.state_dict()[head])
        assert second["train_loss"] < first["train_loss"]
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_fit_with_eval_set_reports_accuracy(toy_base, tmp_path):
    model, tokenizer = models.load_classifier(toy_base)
    out = train.fit(
        model,
        tokenizer,
        data.load_split("es-ES", "train", "toy"),
        epochs=1,
        batch_size=32,
        lr=2e-3,
        max_seq_length=64,
        seed=0,
        output_dir=tmp_path,
        eval_ds=data.load_split("es-ES", "dev", "toy"),
    )
    evals = [h for h in out["log_history"] if "eval_accuracy" in h]
    assert len(evals) == 1 and 0.0 <= evals[0]["eval_accuracy"] <= 1.0


def test_missing_base_is_an_error(toy_train_args, tmp_path):
    with pytest.raises(ValueError, match="model folder .*nowhere does not exist"):
        train.train_locale("de-DE", **{**toy_train_args, "base_model": tmp_path / "nowhere"})


def test_train_locales_on_two_processes_trains_the_same_models(toy_sources, toy_train_args, tmp_path):
    # the fixture trained de-DE and nl-NL one after the other in this process; two one-thread workers retrain them
    kw = {**toy_train_args, "models_dir": str(tmp_path / "two")}
    assert models.num_parameters(paths.resolve(kw["base_model"])) < models.TINY_PARAMS  # workers=None: free cores
    got = train.train_locales(["de-DE", "nl-NL"], workers=2, **kw)
    assert list(got) == ["de-DE", "nl-NL"]
    for loc, path in got.items():
        mine, ref = models.load_state_dict(path), models.load_state_dict(toy_sources[loc])
        assert all(torch.equal(mine[k], ref[k]) for k in ref), loc
