"""The study's data pools (mu.corpus.pools, written by mu.experiment.subsample): the labeled and unlabeled pools
share no id in any locale, the confirmatory test items share none with the items reported before, every pool
has its declared size; on toy ids, on the toy data, and on the real MASSIVE 1.1 files when they are here."""

from __future__ import annotations

import collections
import hashlib
import json

import pytest

from mu.batch import params
from mu.corpus import data, massive, pools
from mu.experiment import subsample
from mu.langs import locales

DECLARED = {"train": 2000, "unlabeled": 1000, "dev": 200, "test": 500}  # python -m mu study's defaults


def toy_ids(n: int, prefix: str = "") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_pools_on_toy_ids_are_disjoint_windows_of_one_ranking():
    splits = {"train": toy_ids(100), "dev": toy_ids(30, "d"), "test": toy_ids(40, "t")}
    windows = pools.layout("disjoint", train=20, unlabeled=30, dev=10, test=5, test_offset=8)
    assert {k: str(w) for k, w in windows.items()} == {
        "train": "train ranks [0, 20)",
        "dev": "dev ranks [0, 10)",
        "test": "test ranks [8, 13)",
        "unlabeled": "train ranks [20, 50)",
    }
    got = pools.cut(splits, windows, seed=3)
    assert {k: len(v) for k, v in got.items()} == {"train": 20, "dev": 10, "test": 5, "unlabeled": 30}
    order = pools.ranked(splits["train"], 3)
    assert got["train"] + got["unlabeled"] == order[:50] and not set(got["train"]) & set(got["unlabeled"])
    assert not set(got["test"]) & set(pools.ranked(splits["test"], 3)[:8])  # past the earlier window
    # parallel locales: the same ids in every locale, whatever order each file lists them in
    other = {k: list(reversed(v)) for k, v in splits.items()}
    assert pools.cut(other, windows, seed=3) == got
    assert pools.cut(splits, windows, seed=4) != got  # the seed picks the pools
    by_locale = {"a": got, "b": pools.cut(other, windows, seed=3)}
    assert pools.overlaps(by_locale, "train", "unlabeled") == set()
    assert pools.overlaps({"a": got, "b": {"unlabeled": got["train"][:2]}}, "train", "unlabeled") == set(
        got["train"][:2]
    )


def test_layout_defaults_and_refusals():
    disjoint = pools.layout(train=2000, dev=200, test=500, unlabeled=1000)  # the pre-registered design
    assert disjoint["test"] == pools.Window("test", 500, 1000) and disjoint["unlabeled"] == pools.Window(
        "train", 2000, 3000
    )
    parallel = pools.layout("parallel", train=2000, dev=200, test=500)
    assert set(parallel) == {"train", "dev", "test"} and parallel["test"] == pools.Window("test", 0, 500)
    assert pools.layout(train=5, dev=None, test=None)["unlabeled"] == pools.Window("train", 5, None)  # rest of train
    with pytest.raises(ValueError, match="parallel design has no unlabeled pool"):
        pools.layout("parallel", train=10, dev=None, test=None, unlabeled=5)
    with pytest.raises(ValueError, match="needs a labeled pool size"):
        pools.layout(train=None, dev=None, test=None)
    with pytest.raises(ValueError, match="unknown pools design 'mixed'"):
        pools.layout("mixed", train=1, dev=1, test=1)
    with pytest.raises(ValueError, match="pool size unlabeled must be an integer >= 1"):
        pools.layout(train=1, dev=1, test=1, unlabeled=0)
    short = pools.layout(train=8, dev=None, test=None, unlabeled=5, test_offset=0)
    with pytest.raises(ValueError, match=r"pool 'unlabeled' = train ranks \[8, 13\), but the train split has 10 ids"):
        pools.cut({"train": toy_ids(10), "dev": ["x"], "test": ["y"]}, short, seed=0)
    with pytest.raises(ValueError, match="parallel design has no unlabeled pool"):
        pools.check_adapt_split("parallel", "unlabeled")
    pools.check_adapt_split("parallel", "train")


def test_subsample_writes_the_pools_and_data_reads_the_unlabeled_one(tmp_path):
    locs = ["de-DE", "sw-KE"]
    out = subsample.subsample(
        "toy", tmp_path / "sub", locs, train=10, unlabeled=20, dev=None, test=5, test_offset=12, seed=1
    )
    split = {loc: {s: data.load_split(loc, s, out) for s in pools.PARTITIONS} for loc in locs}
    sizes = {s: len(ds) for s, ds in split["de-DE"].items()}
    assert sizes == {"train": 10, "dev": len(data.load_split("de-DE", "dev", "toy")), "test": 5, "unlabeled": 20}
    for s in pools.PARTITIONS:
        assert split["de-DE"][s]["id"] == split["sw-KE"][s]["id"]  # translations of each other
    ids = {loc: {s: set(ds["id"]) for s, ds in parts.items()} for loc, parts in split.items()}
    assert pools.overlaps(ids, "train", "unlabeled") == set()
    texts = data.unlabeled("de-DE", "unlabeled", out)
    assert texts == list(split["de-DE"]["unlabeled"]["text"]) and len(texts) == 20
    # what AdaMerging and distillation fit on, and their held-out slice: the pool's texts, never a labeled id's
    from mu.merge import evaluation

    fit, held, origin = evaluation.adaptation_texts("de-DE", "unlabeled", out, num_examples=None, held_out=0.1, seed=0)
    assert sorted(fit + held) == sorted(texts) and len(held) == 2
    assert (origin["split"], origin["labels"], origin["transductive"]) == ("unlabeled", "none", False)
    record = subsample.recorded(out)
    assert record["pools"] == "disjoint" and record["ranking_seed"] == 1 and record["adapt_split"] == "unlabeled"
    assert record["sizes"] == {"train": 10, "dev": sizes["dev"], "test": 5, "unlabeled": 20}
    assert record["ranks"]["unlabeled"] == ["train", 10, 30] and record["ranks"]["test"] == ["test", 12, 17]
    # the toy data and a parallel folder have no unlabeled pool: a clear error, never an empty set
    with pytest.raises(ValueError, match="data source 'toy' has no 'unlabeled' partition.*adapt_split=train"):
        data.unlabeled("de-DE", "unlabeled", "toy")
    par = subsample.subsample("toy", tmp_path / "par", ["de-DE"], train=10, dev=None, test=5, design="parallel")
    with pytest.raises(ValueError, match=r"de-DE\.jsonl has no 'unlabeled' partition"):
        data.load_split("de-DE", "unlabeled", par)
    assert subsample.recorded(par)["pools"] == "parallel"


def _old_subsample_lines(locale: str, limits: dict, seed: int) -> str:
    """The subsample as written before pools existed (the parallel design must reproduce it byte for byte)."""
    lines = []
    for split, n in limits.items():
        ds = data.load_split(locale, split, "toy")
        ids = list(ds["id"])
        rank = sorted(range(len(ids)), key=lambda i: hashlib.sha256(f"{seed}:{ids[i]}".encode()).hexdigest())
        keep = rank[:n] if n else range(len(ids))
        lines += [
            json.dumps(
                {
                    "id": ids[i],
                    "locale": locale,
                    "partition": split,
                    "intent": data.ID2LABEL[ds["label"][i]],
                    "utt": ds["text"][i],
                },
                ensure_ascii=False,
            )
            for i in sorted(keep)
        ]
    return "\n".join(lines) + "\n"


def test_the_parallel_design_writes_what_the_earlier_runs_read(tmp_path):
    limits = {"train": 30, "dev": 8, "test": 12}
    out = subsample.subsample("toy", tmp_path / "par", ["nl-NL"], **limits, design="parallel", seed=42)
    assert (out / "nl-NL.jsonl").read_text(encoding="utf-8") == _old_subsample_lines("nl-NL", limits, 42)


def _massive_ids() -> dict[str, dict[str, list[str]]]:
    """{locale: {split: ids}} of the 51 study locales, read from the files without building datasets."""
    out = {}
    for loc in locales.LOCALES:
        ids = collections.defaultdict(list)
        for _, obj in massive.jsonl_objects(massive.locale_file(massive.massive_dir(), loc)):
            ids[obj["partition"]].append(str(obj["id"]))
        out[loc] = dict(ids)
    return out


@pytest.mark.skipif(
    not massive.massive_dir().is_dir(),
    reason=f"real MASSIVE 1.1 not found at {massive.massive_dir()} (set MU_MASSIVE_DIR or put it in "
    "../shared/massive/1.1 beside the checkout)",
)
def test_real_massive_pools_are_disjoint_across_all_51_locales(tmp_path):
    # the pool ids of every locale, computed as subsample cuts them (writing 51 locales takes minutes)
    seed = params.load_params("02_training", "mini")["seed"]  # the seed python -m mu study ranks with
    assert seed == pools.REPORTED_SEED, "the earlier runs' test items are ranks [0, 500) of this ranking only"
    windows = pools.layout("disjoint", **DECLARED)
    ids = _massive_ids()
    cut = {loc: pools.cut(splits, windows, seed) for loc, splits in ids.items()}
    assert len(cut) == 51
    for loc, parts in cut.items():
        assert {k: len(v) for k, v in parts.items()} == DECLARED, loc
        assert parts == cut["en-US"], f"{loc}: other ids than en-US's (MASSIVE is parallel)"
    assert pools.overlaps(cut, "train", "unlabeled") == set()  # the union over all 51 locales
    # the confirmatory test items against the ones reported before (test ranks [0, 500)), over all 51 locales
    earlier = {loc: {**cut[loc], "earlier": pools.ranked(s["test"], seed)[:500]} for loc, s in ids.items()}
    assert pools.overlaps(earlier, "test", "earlier") == set()
    # and subsample writes exactly these pools (two locales: the files, not only the ranking)
    out = subsample.subsample("massive", tmp_path / "mini", ["sw-KE", "ja-JP"], **DECLARED, seed=seed)
    for loc in ("sw-KE", "ja-JP"):
        written = {s: set(data.load_split(loc, s, out)["id"]) for s in pools.PARTITIONS}
        assert written == {s: set(v) for s, v in cut[loc].items()}
    assert subsample.recorded(out)["sizes"] == DECLARED and subsample.recorded(out)["test_disjoint_from_reported"]


def test_the_mini_profile_adapts_on_the_unlabeled_pool():
    for stem in ("03_merging", "04_ensembling"):
        assert params.load_params(stem, "mini")["adapt_split"] == pools.UNLABELED
        assert params.load_params(stem, "toy")["adapt_split"] == "train"  # the toy data has no unlabeled pool


def test_pools_is_torch_free():
    import subprocess
    import sys

    code = "import sys, mu.corpus.pools; assert not {'torch', 'datasets', 'pandas'} & set(sys.modules), sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
