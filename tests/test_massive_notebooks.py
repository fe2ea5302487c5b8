"""The massive profile's own code path on real data: notebooks 02 → 03 → 04 with params/*.yaml's
``massive`` settings (max_seq_length 128, its batch sizes, max_k, keep_merged false, ...), pointed at
a few real MASSIVE locales (subsampled) and a small base pretrained here in seconds.

Only what cannot run offline is replaced: ``data`` (the hub → a subsample of ../shared/massive/1.1),
``locales`` (51 → 4), the base (xlm-roberta-base → a tiny encoder pretrained by ``mu.pretrain``, which
notebook 02 takes through the ``mini`` profile's ``ensure_base``) and, for that tiny base, ``lr``
(5e-5 → 2e-3: at xlm-roberta-base's rate it learns nothing in 3 epochs, and the ``transfer`` weights of
an all-zero N×N matrix are, rightly, an error), 03's ``sts_data`` (the hub's STS-B → toy pairs in
the profile's ``sts_locale``, en-US), the declared tuning targets (two of the four locales), 04's
``distill_inits`` (``all`` → linear and iso_c: every method's merge is tested in test_merge_sweep; here only the
choice and the ``-from_<init>`` path matter, and 21 merges per tuning target would double this test's time) and
the grids of the adapted family, one value each (AdaMerging ``task`` at 50 steps, the student's lr 1e-4:
declared, not measured): the grids themselves run in the toy notebooks 03 and 04 and in test_merge_notebook and
test_ensemble; here they would only repeat them at 128 tokens.
"""

from __future__ import annotations

import papermill
import pytest

from mu import massive, merge, params, paths, pretrain, report, subsample

REPO = paths.Path(__file__).resolve().parent.parent
LOCALES = ["de-DE", "nl-NL", "sw-KE", "id-ID"]
DATA = "cache/data/massive-ci"
TARGET = "nl-NL"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not massive.massive_dir().is_dir(),
        reason=f"real MASSIVE 1.1 not found at {massive.massive_dir()} (set MU_MASSIVE_DIR or put it in "
        "../shared/massive/1.1 beside the checkout)",
    ),
]


def _params(stem: str) -> dict:
    values = params.load_params(stem, "massive")
    values.update(profile="mini", data=DATA)
    overrides = (
        ("locales", LOCALES),
        ("lr", 2e-3),
        ("target_lang", TARGET),
        ("sts_data", "toy"),
        ("tuning_targets", ["de-DE", "sw-KE"]),
        ("distill_inits", ["linear", "iso_c"]),
        ("adamerging", ["task"]),
        ("adapt_steps", [50]),
        ("distill_lrs", [1e-4]),
    )
    for key, value in overrides:
        if key in params.notebook_parameters(REPO / "notebooks" / f"{stem}.ipynb"):
            values[key] = value
    return values


def _execute(stem: str, tmp_path) -> None:
    papermill.execute_notebook(
        str(REPO / "notebooks" / f"{stem}.ipynb"),
        str(tmp_path / f"{stem}.ipynb"),
        parameters=_params(stem),
        kernel_name="python3",
        progress_bar=False,
    )


def test_massive_settings_run_02_03_04_on_real_locales(tmp_path):
    subsample.subsample(
        "massive", DATA, LOCALES, train=400, dev=120, test=120, seed=0
    )  # the transfer weighting ranks on dev
    p02 = _params("02_training")
    assert p02["max_seq_length"] == 128 and p02["models_dir"] == "models/massive"
    pretrain.ensure(
        "mini",
        objective="mlm+tlm",
        base_model=p02["base_model"],
        seed=p02["seed"],
        locales=LOCALES,
        source=DATA,
        steps=8,
        vocab_size=800,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_len=64,
        batch_size=16,
        warmup_steps=2,
        dev_per_locale=8,
    )
    for stem in ("02_training", "03_merging", "04_ensembling"):
        _execute(stem, tmp_path)
    matrix = paths.read_json(report.record_path("02_training", "mini", "training"))["results"]["evaluation_matrix"]
    assert set(matrix) == set(LOCALES) and all(set(row) == set(LOCALES) for row in matrix.values())
    merged = paths.read_json(report.record_path("03_merging", TARGET, "linear-similarity"))
    # the profile's compare_modes: the transfer-weighted merge beside the URIEL one and its average
    assert {r["system"] for r in merged["rows"]} == {
        "merge/linear/similarity",
        "merge/linear/average",
        "merge/linear/transfer",
    }
    assert all(r["n"] == 120 and TARGET not in r["sources"] for r in merged["rows"])
    ens = paths.read_json(report.record_path("04_ensembling", TARGET, "ensembles"))
    assert ens["params"]["keep_merged"] is False and ens["params"]["max_seq_length"] == 128
    ks = {r["k"] for r in ens["results"]["accuracy_vs_k"]}
    assert ks == {1, 2, 3}  # 3 sources besides the target, fewer than the profile's max_k
    # keep_merged=False: the K-source merges were deleted once evaluated
    assert not any(
        paths.resolve(merge.merged_dir("models/massive", TARGET, "linear", f"similarity-k{k}")).exists() for k in ks
    )
