"""mu.tracking: report_to through the Trainer's integrations; TensorBoard offline, wandb / mlflow optional."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mu import models, tracking, train


def test_report_to_names_are_checked():
    assert tracking.check(None) == tracking.check("none") == tracking.check([]) == []
    assert tracking.check("tensorboard") == ["tensorboard"]
    assert tracking.check(["tensorboard", "tensorboard"]) == ["tensorboard"]
    with pytest.raises(
        ValueError,
        match=r"unknown report_to backend\(s\) \['comet'\]; valid: 'none' or any of "
        r"\['mlflow', 'tensorboard', 'wandb'\]",
    ):
        tracking.check(["tensorboard", "comet"])


@pytest.mark.parametrize("backend", ["wandb", "mlflow"])
def test_an_optional_backend_that_is_not_installed_says_what_to_install(backend, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        tracking.importlib.util, "find_spec", lambda name, *a: None if name == backend else real(name, *a)
    )
    with pytest.raises(
        ImportError,
        match=rf"needs \['{backend}'\], which is not installed: pip install {backend} "
        r"\(not a dependency of mu\)",
    ):
        tracking.check(["tensorboard", backend])
    with pytest.raises(ImportError, match=f"pip install {backend}"):  # before any training
        train.train_locale(
            "de-DE",
            base_model="nowhere",
            data="toy",
            models_dir="models/none",
            epochs=1,
            batch_size=8,
            lr=1e-3,
            max_seq_length=16,
            seed=0,
            report_to=backend,
        )


def test_trainer_setup_routes_tensorboard_to_the_log_dir(tmp_path):
    from transformers.integrations import TensorBoardCallback

    report_to, callbacks = tracking.trainer_setup(["wandb", "tensorboard"], tmp_path / "tb")
    assert report_to == ["wandb"] and [type(c) for c in callbacks] == [TensorBoardCallback]
    assert tracking.trainer_setup([], None) == ([], [])
    with pytest.raises(ValueError, match="needs a log_dir"):
        tracking.trainer_setup(["tensorboard"], None)


def test_tracked_training_writes_loss_and_dev_accuracy_and_trains_the_same_weights(toy_base, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = dict(base_model=toy_base, data="toy", epochs=2, batch_size=32, lr=2e-3, max_seq_length=32, seed=3)
    tracked = train.train_locale("sw-KE", models_dir=tmp_path / "tracked", report_to="tensorboard", **args)
    plain = train.train_locale("sw-KE", models_dir=tmp_path / "plain", **args)
    log_dir = train.tracking_dir("sw-KE", tmp_path / "tracked")
    assert list(log_dir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(log_dir)).Reload()
    assert len(acc.Scalars("train/loss")) == 2 and len(acc.Scalars("eval/accuracy")) == 2
    assert all(0 <= e.value <= 1 for e in acc.Scalars("eval/accuracy"))
    assert not train.tracking_dir("sw-KE", tmp_path / "plain").exists()
    a, b = models.load_state_dict(tracked), models.load_state_dict(plain)
    assert all(torch.equal(a[k], b[k]) for k in a), "tracking (and its dev evaluation) must not change training"
