"""The confirmatory study's pre-registration (params/preregistration.yaml): complete, testable with the
package's own inference, and committed before any confirmatory result."""

import subprocess
from pathlib import Path

import pytest
import yaml

from mu.analysis import inference

REPO = Path(__file__).resolve().parents[1]
PREREG = REPO / "params" / "preregistration.yaml"
RESULTS = REPO / "docs" / "results" / "confirmatory"


def load():
    return yaml.safe_load(PREREG.read_text())


def test_every_hypothesis_names_declared_systems_a_known_test_and_its_margin():
    reg = load()
    assert {"design", "targets", "seeds", "primary_metric", "tests", "hypotheses", "budget"} <= set(reg)
    assert len(reg["seeds"]) >= 3, "claims hold only across >= 3 fine-tuning seeds"
    ids = [h["id"] for h in reg["hypotheses"]]
    assert len(ids) == len(set(ids)) and ids
    for h in reg["hypotheses"]:
        assert h["a"] in reg["systems"] and h["b"] in reg["systems"], h
        assert h["kind"] in inference.KINDS, h
        if h["kind"] != "superiority":
            assert h.get("delta", 0) > 0, f"{h['id']}: a margin is declared for {h['kind']}"
    assert reg["tests"]["alpha"] == 0.05


def test_the_pools_share_no_id_rank_and_the_test_set_is_fresh():
    pools = load()["design"]["pools"]
    lab, unl = pools["labeled"], pools["unlabeled"]
    assert lab["split"] == unl["split"] == "train"
    assert lab["ranks"][1] <= unl["ranks"][0], "labeled and unlabeled ranks must not overlap"
    assert pools["test"]["ranks"][0] >= 500, "earlier runs reported on test ranks [0, 500)"


def test_committed_before_any_confirmatory_result():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")

    def first_commit(path: Path) -> int | None:
        out = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=%ct", "--", str(path.relative_to(REPO))],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        return int(out[-1]) if out else None

    registered = first_commit(PREREG)
    if registered is None:
        pytest.skip("the pre-registration is not committed yet")
    results = first_commit(RESULTS) if RESULTS.exists() else None
    assert results is None or registered < results, "confirmatory results were committed before the pre-registration"
