"""The tuning protocol (mu.protocol) and the fine-tuning recipe chosen on dev (mu.tuning)."""

import pandas as pd
import pytest

from mu import paths, protocol, tuning


def test_record_load_and_markdown(mu_root):
    protocol.record(
        "prot",
        "02.lr",
        1e-3,
        chosen_by="dev",
        data="dev split of en-US",
        evidence=[{"lr": 1e-3, "dev_accuracy": 0.61234}, {"lr": 2e-3, "dev_accuracy": 0.6}],
    )
    protocol.record("prot", "06.tuning_targets", ["en-US"], chosen_by="declared", data="none (declared)")
    got = protocol.load("prot")
    assert list(got) == ["02.lr", "06.tuning_targets"] and protocol.value("prot", "02.lr") == 1e-3
    md = protocol.write("prot").read_text()
    assert "| `02.lr` | 0.001 | `dev` | dev split of en-US |" in md and "0.6123" in md
    with pytest.raises(KeyError, match="recorded: \\['02.lr', '06.tuning_targets'\\]"):
        protocol.value("prot", "02.epochs")


def test_small_values_keep_their_digits_in_protocol_md(mu_root):
    evidence = [{"lr": lr, "dev_accuracy": 0.612345} for lr in (1e-5, 3e-5, 1e-4, 2.5e-7, 0.0)]
    protocol.record("small", "04.distill.lr", 3e-5, chosen_by="dev", data="dev", evidence=evidence)
    rows = protocol.markdown("small").split("## `04.distill.lr`: evidence")[1].splitlines()
    lrs = [r.split(" | ")[0].strip("| ") for r in rows if r.startswith("| ") and "dev_accuracy" not in r]
    assert lrs == ["1e-05", "3e-05", "0.0001", "2.5e-07", "0.0"]  # never 0.0 for a learning rate
    assert "| `04.distill.lr` | 3e-05 |" in protocol.markdown("small") and "| 0.6123 |" in protocol.markdown("small")


def test_a_choice_at_its_grids_edge_is_listed_in_protocol_md(mu_root):
    assert [protocol.edge(v, [3e-4, 1e-3, 3e-3]) for v in (3e-4, 1e-3, 3e-3)] == ["smallest", "", "largest"]
    assert protocol.edge(8.0, [3, 5, 8]) == "largest" and protocol.edge("layer", ["layer", "task"]) == ""
    assert protocol.edge(5, [5]) == "" and protocol.edge(1, None) == ""  # one value: nothing was compared
    import numpy as np

    assert protocol.edge(np.int64(8), list(np.array([3, 5, 8]))) == "largest"  # a grid read from a frame
    assert protocol.edge(True, [False, True]) == ""
    protocol.record("edge", "04.distill.lr", 3e-4, chosen_by="tuning-targets", data="dev", grid=[3e-4, 1e-3, 3e-3])
    protocol.record("edge", "02.lr", 1e-3, chosen_by="dev", data="dev", grid=[5e-4, 1e-3, 2e-3])
    protocol.record("edge", "03.adamerging.granularity", "task", chosen_by="dev", data="dev", grid=["layer", "task"])
    md = protocol.markdown("edge")
    listed = md.split("## Choices at a grid's edge")[1].split("\n## ")[0]
    assert "| `04.distill.lr` | 0.0003 | [0.0003, 0.001, 0.003] | smallest |" in listed
    assert "`02.lr`" not in listed and "granularity" not in listed  # inside its grid; not a numeric grid
    protocol.record("edge", "04.distill.lr", 1e-3, chosen_by="tuning-targets", data="dev", grid=[3e-4, 1e-3, 3e-3])
    assert "grid's edge" not in protocol.markdown("edge")
    with pytest.raises(ValueError, match=r"the chosen value 0.01 is not in its grid \[0.0003, 0.001\]"):
        protocol.record("edge", "04.distill.lr", 1e-2, chosen_by="dev", data="dev", grid=[3e-4, 1e-3])


@pytest.mark.parametrize("bad", ["test", "test-labels", ""])
def test_a_choice_on_test_labels_has_no_name(mu_root, bad):
    with pytest.raises(ValueError, match="nothing is chosen on test labels"):
        protocol.record("prot2", "x", 1, chosen_by=bad, data="test split")


def test_a_tampered_record_is_refused(mu_root):
    path = protocol.record("prot3", "x", 1, chosen_by="dev", data="dev")
    paths.write_json(path, {**paths.read_json(path), "chosen_by": "test"})
    with pytest.raises(ValueError, match="not a protocol criterion"):
        protocol.load("prot3")


def test_choose_breaks_ties_towards_the_cheaper_recipe():
    grid = pd.DataFrame(
        [
            {"locale": "a", "epochs": 5, "lr": 1e-3, "dev_accuracy": 0.6},
            {"locale": "b", "epochs": 5, "lr": 1e-3, "dev_accuracy": 0.7},
            {"locale": "a", "epochs": 3, "lr": 2e-3, "dev_accuracy": 0.7},
            {"locale": "b", "epochs": 3, "lr": 2e-3, "dev_accuracy": 0.6},
            {"locale": "a", "epochs": 3, "lr": 5e-4, "dev_accuracy": 0.1},
            {"locale": "b", "epochs": 3, "lr": 5e-4, "dev_accuracy": 0.1},
        ]
    )
    got = tuning.choose(grid)
    assert {k: got[k] for k in ("epochs", "lr", "dev_accuracy")} == {
        "epochs": 3,
        "lr": 2e-3,
        "dev_accuracy": pytest.approx(0.65),
    }


def test_tune_finetuning_reads_dev_only_records_and_caches(toy_base, monkeypatch):
    from mu import data as mu_data

    read = []
    real = mu_data.load_split
    monkeypatch.setattr(
        mu_data, "load_split", lambda loc, split, src="toy": read.append(split) or real(loc, split, src)
    )
    kw = dict(
        base_model=toy_base, data="toy", epochs_grid=[1, 2], lr_grid=[2e-3], batch_size=16, max_seq_length=64, seed=42
    )
    chosen = tuning.tune_finetuning("tunetoy", ["de-DE"], **kw)
    assert set(read) == {"train", "dev"}  # never the test split
    assert chosen["epochs"] in (1, 2) and chosen["lr"] == 2e-3
    assert protocol.value("tunetoy", "02.epochs") == chosen["epochs"]
    assert protocol.load("tunetoy")["02.lr"]["chosen_by"] == "dev"
    assert (protocol.load("tunetoy")["02.epochs"]["grid"], protocol.load("tunetoy")["02.lr"]["grid"]) == (
        [1, 2],
        [2e-3],
    )
    grid = paths.read_json(paths.reports_dir("study", "tunetoy", "tuning", "finetune.json"))["grid"]
    assert len(grid) == 2 and all(0 <= r["dev_accuracy"] <= 1 for r in grid)
    read.clear()
    assert tuning.tune_finetuning("tunetoy", ["de-DE"], **kw) == chosen and read == []  # cached: nothing trained
    # a widened grid fits only its new cell; the cells it shares keep their measurements
    wide = tuning.tune_finetuning("tunetoy", ["de-DE"], **{**kw, "epochs_grid": [1, 2, 3]})
    assert read == ["train", "dev"] and protocol.load("tunetoy")["02.epochs"]["grid"] == [1, 2, 3]
    again = paths.read_json(paths.reports_dir("study", "tunetoy", "tuning", "finetune.json"))["grid"]
    assert again[:2] == grid and [r["epochs"] for r in again] == [1, 2, 3] and wide["epochs"] in (1, 2, 3)
    with pytest.raises(ValueError, match="must be > 0"):
        tuning.tune_finetuning("tunetoy", ["de-DE"], **{**kw, "lr_grid": [0]})


def test_finetune_grid_on_two_processes_gives_the_grid_in_order(toy_base):
    kw = dict(
        base_model=toy_base,
        data="toy",
        epochs_grid=[1],
        lr_grid=[1e-3, 2e-3],
        batch_size=16,
        max_seq_length=64,
        seed=42,
    )
    one = tuning.finetune_grid(["de-DE", "nl-NL"], **kw)
    two = tuning.finetune_grid(["de-DE", "nl-NL"], **kw, workers=2)
    cols = ["locale", "epochs", "lr", "n_dev"]
    pd.testing.assert_frame_equal(one[cols], two[cols])
    assert list(two["locale"]) == ["de-DE", "de-DE", "nl-NL", "nl-NL"]
    # one thread in each worker against the caller's count: float sums may differ, the accuracies barely
    assert (abs(one["dev_accuracy"] - two["dev_accuracy"]) <= 0.05).all()


def test_the_one_se_rule_takes_the_fewest_epochs_within_noise_of_the_best():
    """600 dev utterances at 0.75: one standard error is 0.0177, so 12 epochs at 0.733 is within it and 8 at
    0.683 is not; the best rule keeps the best cell, and an unknown rule names the valid ones."""
    cells = {(8, 2e-3): 0.6833, (12, 2e-3): 0.7333, (12, 1e-3): 0.715, (24, 1e-3): 0.75, (24, 2e-3): 0.7433}
    grid = pd.DataFrame(
        [
            {"locale": loc, "epochs": e, "lr": lr, "dev_accuracy": a, "n_dev": 200}
            for (e, lr), a in cells.items()
            for loc in "abc"
        ]
    )
    got = tuning.choose(grid, "one-se")
    assert (got["epochs"], got["lr"]) == (12, 2e-3) and got["best"]["epochs"] == 24
    assert got["threshold"] == pytest.approx(0.75 - (0.75 * 0.25 / 600) ** 0.5)
    assert (tuning.choose(grid)["epochs"], tuning.choose(grid)["lr"]) == (24, 1e-3)
    with pytest.raises(ValueError, match="valid: \\['best', 'one-se'\\]"):
        tuning.choose(grid, "elbow")
