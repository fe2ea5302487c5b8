"""Every notebook parameter is checked before any kernel starts, from one declaration
(mu.checks) that the notebooks use too; bad --set values, YAML errors and tags, and an unusable
MU_ROOT are `error:` lines with exit 2, never tracebacks. No kernel runs here."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mu import checks, params, paths, runner

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_parameter_has_a_declaration_and_every_profile_passes_it(notebook):
    parameters = params.notebook_parameters(notebook)
    missing = sorted(set(parameters) - set(checks.PARAMETERS))
    assert not missing, f"{notebook.name}: declare {missing} in mu.checks.PARAMETERS"
    checks.check_values(parameters, where=notebook.stem)  # the notebook's own defaults
    for profile in params.read_params_file(params.params_file(notebook.stem))["profiles"]:
        checks.check_values({**parameters, **params.load_params(notebook.stem, profile)}, where=profile)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_each_notebook_checks_its_parameters_first_and_reads_them_as_papermill_does(notebook):
    import nbformat
    import papermill

    nb = nbformat.read(notebook, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    assert f'mu.checks.notebook("{notebook.stem}", globals())' in first.source
    expected = {k: ast.literal_eval(v["default"]) for k, v in papermill.inspect_notebook(str(notebook)).items()}
    assert params.notebook_parameters(notebook) == expected


def test_the_copied_names_are_those_of_their_owners():
    for source, names in checks.NAMES.items():
        module, attr = source.split(":")
        owner = getattr(importlib.import_module(module), attr.rstrip("()"))
        owned = owner() if attr.endswith("()") else owner
        assert tuple(owned) == names, f"mu.checks.NAMES[{source!r}] differs from {source}: {tuple(owned)}"


def test_the_notebook_check_says_what_the_runner_says():
    ns = {**params.notebook_parameters(REPO / "notebooks" / "05_iterative.ipynb"), "merge_frequency": 0}
    with pytest.raises(ValueError) as in_notebook:
        checks.notebook("05_iterative", ns)
    with pytest.raises(ValueError) as in_runner:
        runner.plan(["05"], ["af-ZA"], extra_params={"merge_frequency": 0})
    assert str(in_notebook.value) == "05_iterative: merge_frequency=0 is not valid; valid: an integer >= 1"
    assert str(in_runner.value) == "05_iterative: merge_frequency=0 (--set) is not valid; valid: an integer >= 1"


@pytest.mark.parametrize(
    "value, ok",
    [
        (("top_k", 3), True),
        (("top_k", 0), False),
        (("top_k", True), False),
        (("top_k", 2.0), False),
        (("lr", 1), True),
        (("lr", 0.0), False),
        (("lr", float("nan")), False),
        (("lr", "1e-3"), False),
        (("density", None), True),
        (("density", 1.0), True),
        (("alpha", 1.0), True),
        (("locales", ["af-ZA", "de-DE"]), True),
        (("locales", []), False),
        (("locales", ["af-ZA", "af-ZA"]), False),
        (("locales", "af-ZA"), False),
        (("head", "merge"), True),
        (("head", "de-DE"), True),
        (("head", "x"), False),
        (("report_to", "none"), True),
        (("report_to", ["tensorboard"]), True),
        (("report_to", "tensorbord"), False),
        (("feature_set", "syntax_knn+fam"), True),
        (("feature_set", "syntax_knn+"), False),
        (("compare_modes", []), True),
        (("modes", []), False),
        (("adamerging", []), True),
        (("adamerging", ["x"]), False),
        (("sts_score_range", [0, 5]), True),
        (("sts_score_range", [5, 0]), False),
        (("max_seq_length", 513), False),
        (("keep_merged", 1), False),
        (("data", ""), False),
        (("seed", -1), False),
        (("adapt_steps", [0, 50]), True),
    ],
)
def test_declarations_take_type_and_range(value, ok):
    name, v = value
    assert (checks.problem(name, v) is None) is ok, checks.problem(name, v)


def test_every_bad_value_and_rule_is_named_at_once():
    with pytest.raises(ValueError) as err:
        checks.check_values({"top_k": "abc", "num_languages": -1, "seed": 1}, where="x")
    assert str(err.value) == (
        "x: top_k='abc' is not valid; valid: an integer >= 1; num_languages=-1 is not valid; valid: an integer >= 1"
    )
    with pytest.raises(ValueError, match=r"min_interval=4, max_interval=3 is not valid: min_interval <= max_interval"):
        checks.check_values({"min_interval": 4, "max_interval": 3}, where="x")
    with pytest.raises(ValueError, match=r"YAML reads it as text: write numbers with a dot"):
        checks.check_values({"lr": "5e-5"}, where="x")
    checks.check_values({"an_undeclared_parameter": object()}, where="x")  # not declared: not checked


def _cli(*args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mu", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    return done, time.perf_counter() - start


@pytest.mark.parametrize(
    "setting, message",
    [
        ("top_k=abc", "01_similarity: top_k='abc' (--set) is not valid; valid: an integer >= 1"),
        ("num_languages=-1", "01_similarity: num_languages=-1 (--set) is not valid; valid: an integer >= 1"),
        ("merge_frequency=0", "05_iterative: merge_frequency=0 (--set) is not valid; valid: an integer >= 1"),
        ("max_k=0", "04_ensembling: max_k=0 (--set) is not valid; valid: an integer >= 1"),
        ("top_k=[1,", "top_k: '[1,' is not a plain YAML value (expected the node content, but found '<stream end>')"),
        (
            'x=!!python/object/apply:os.system ["echo hi"]',
            "x: '!!python/object/apply:os.system [\"echo hi\"]' is not a "
            "plain YAML value (could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:"
            "os.system')",
        ),
    ],
)
def test_a_bad_value_on_the_command_line_is_an_error_line_before_any_kernel(setting, message, tmp_path):
    done, seconds = _cli(
        "run", "--notebooks", "01", "04", "05", "--targets", "af-ZA", "--set", setting, env={"MU_ROOT": str(tmp_path)}
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    [line] = [x for x in done.stderr.splitlines() if "error:" in x]
    assert message in line
    assert not (tmp_path / "reports").exists()  # nothing ran
    assert seconds < 30  # (about half a second here; a kernel alone took 20-30 s)


def test_mu_root_that_is_no_folder_is_an_error_line(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("x")
    done, _ = _cli("run", "--notebooks", "01", "--targets", "af-ZA", env={"MU_ROOT": str(regular)})
    assert (done.returncode, done.stderr.strip()) == (
        2,
        f"error: MU_ROOT={str(regular)!r} is not a directory; point MU_ROOT at a folder (it is created if missing)",
    )
    below = regular / "sub"
    done, _ = _cli("demo", env={"MU_ROOT": str(below)})
    assert done.returncode == 2 and done.stderr.startswith(f"error: MU_ROOT={str(below)!r} cannot be created: ")


def test_check_root_creates_a_missing_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MU_ROOT", str(tmp_path / "new" / "root"))
    assert paths.check_root() == tmp_path / "new" / "root" and (tmp_path / "new" / "root").is_dir()


def test_the_study_checks_its_parameters_before_subsampling_and_pretraining(tmp_path, monkeypatch):
    from mu import study

    monkeypatch.setenv("MU_ROOT", str(tmp_path))
    with pytest.raises(ValueError, match=r"02_training: epochs=0 \(--set\) is not valid; valid: a number > 0"):
        study.run(
            "mini",
            source="toy",
            train=8,
            dev=8,
            test=8,
            objective="mlm",
            steps=1,
            notebooks=["01", "02"],
            extra_params={"epochs": 0},
        )
    assert not (tmp_path / "cache" / "data").exists() and not (tmp_path / "models").exists()  # nothing made


def test_every_module_is_reachable_as_an_attribute_of_mu():
    import mu

    modules = {p.stem for p in (REPO / "mu").glob("*/*.py") if not p.stem.startswith("_") and p.parent.name != "merge"}
    assert modules <= set(mu.PUBLIC), sorted(modules - set(mu.PUBLIC))
    assert all(getattr(mu, name).__name__ == f"mu.{wing}.{name}" for name, wing in mu.PUBLIC.items())


@pytest.mark.parametrize(
    "values,message",
    [
        (
            {"method": "ties", "density": 0.0},
            "merge method 'ties': density=0.0 is not valid; valid: a number > 0 and <= 1",
        ),
        (
            {"method": "breadcrumbs", "gamma": 1.0},
            "merge method 'breadcrumbs': gamma=1.0 is not valid; valid: a number >= 0 and < 1",
        ),
        ({"method": "linear", "density": 0.3}, "merge method 'linear' does not take ['density']"),
    ],
)
def test_merge_knobs_are_checked_by_the_catalog_with_the_method(values, message):
    # the runner says what mu.merge.knobs_for says in the notebook: one declaration, one message
    with pytest.raises(ValueError) as runner_error:
        checks.check_values({**values, "alpha": None}, where="03_merging")
    assert message in str(runner_error.value)
    from mu.merge import registry

    with pytest.raises(ValueError) as notebook_error:
        registry.knobs_for(values["method"], **{k: v for k, v in values.items() if k != "method"})
    assert str(notebook_error.value).startswith(message)
    checks.check_values(
        {**values, "method": "ties" if "density" in values else "breadcrumbs", "density": None, "gamma": None},
        where="03",
    )


def test_every_notebook_parameter_has_a_meaning_and_the_notebooks_carry_their_generated_text():
    from mu.batch import parameter_docs

    for notebook in NOTEBOOKS:
        missing = sorted(set(params.notebook_parameters(notebook)) - set(parameter_docs.MEANING))
        assert not missing, f"{notebook.name}: say what {missing} mean in mu.batch.parameter_docs.MEANING"
    assert parameter_docs.update(check=True) == [], "run `python -m mu docs` and commit the notebooks"


def test_a_parameter_comment_is_the_meaning_and_the_declaration():
    from mu.batch import parameter_docs

    cell = 'top_k = 20\nmode = "similarity"  # an old comment\nnote = "a # in a string"  # kept as it is'
    out = parameter_docs.annotate(cell).splitlines()
    assert out[0] == "top_k = 20  # neighbours kept per language before Sinkhorn normalisation; valid: an integer ≥ 1"
    assert out[1].startswith('mode = "similarity"  # how the sources are weighted') and "an old comment" not in out[1]
    assert out[2] == cell.splitlines()[2]  # not a parameter of any notebook: untouched
    assert parameter_docs.annotate("\n".join(out)) == "\n".join(out)  # idempotent
