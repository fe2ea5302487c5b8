"""params/<stem>.yaml against notebooks/<stem>.ipynb: every key is a notebook parameter
(papermill.inspect_notebook), a typo fails, and the notebook's defaults are the toy profile."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from mu import params

REPO = Path(__file__).resolve().parent.parent
PARAMS = sorted((REPO / "params").glob("[0-9][0-9]_*.yaml"))  # the notebooks' params; preregistration.yaml is not one
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROFILES = {"toy", "massive", "mini"}


def check_params_file(params_path: Path, notebook: Path) -> None:
    """Raise (ValueError / AssertionError) unless the YAML fits the notebook."""
    data = params.read_params_file(params_path)
    parameters = params.notebook_parameters(notebook)
    assert "toy" in data["profiles"], f"{params_path.name}: needs a toy profile (the notebook's defaults)"
    params.check_keys(f"{params_path.name} shared", data["shared"], parameters)
    for profile, values in data["profiles"].items():
        params.check_keys(f"{params_path.name} profiles.{profile}", values, parameters)
    toy = {**data["shared"], **data["profiles"]["toy"]}
    differ = {k: (v, parameters[k]) for k, v in toy.items() if parameters[k] != v}
    assert not differ, f"{notebook.name}: defaults differ from the toy profile (yaml, notebook): {differ}"
    if "profile" in parameters:
        assert parameters["profile"] == "toy", f"{notebook.name}: default profile must be 'toy'"


@pytest.mark.parametrize("params_path", PARAMS, ids=[p.stem for p in PARAMS])
def test_params_keys_are_notebook_parameters_and_toy_is_the_default(params_path):
    notebook = REPO / "notebooks" / f"{params_path.stem}.ipynb"
    assert notebook.is_file(), f"{params_path.name} has no notebook {notebook.name}"
    check_params_file(params_path, notebook)
    profiles = set(params.read_params_file(params_path)["profiles"])
    assert profiles == PROFILES, f"{params_path.name}: profiles must be {sorted(PROFILES)}, got {sorted(profiles)}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_has_params_and_is_committed_clean(notebook):
    assert (REPO / "params" / f"{notebook.stem}.yaml").is_file(), f"no params/{notebook.stem}.yaml"
    nb = nbformat.read(notebook, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "metadata.kernelspec must be python3"
    assert nb.cells[0].cell_type == "markdown", "first cell must state the question"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit notebooks without outputs"
    assert "mu.report.save(" in "".join(c.source for c in nb.cells)


def test_a_typo_fails(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# q"),
        nbformat.v4.new_code_cell(
            'profile = "toy"\nnum_languages = 5\nmethod = "linear"', metadata={"tags": ["parameters"]}
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "09_x.ipynb")
    good = tmp_path / "09_x.yaml"
    good.write_text("shared: {num_languages: 5}\nprofiles: {toy: {method: linear}, massive: {method: ties}}\n")
    check_params_file(good, tmp_path / "09_x.ipynb")

    typo = tmp_path / "typo.yaml"
    typo.write_text("shared: {num_language: 5}\nprofiles: {toy: {}, massive: {}}\n")
    with pytest.raises(ValueError, match=r"\['num_language'\] are not parameters of the notebook"):
        check_params_file(typo, tmp_path / "09_x.ipynb")
    wrong_default = tmp_path / "default.yaml"
    wrong_default.write_text("shared: {}\nprofiles: {toy: {method: ties}, massive: {}}\n")
    with pytest.raises(AssertionError, match="defaults differ from the toy profile"):
        check_params_file(wrong_default, tmp_path / "09_x.ipynb")
    layout = tmp_path / "layout.yaml"
    layout.write_text("shared: {}\ntoy: {method: linear}\n")
    with pytest.raises(ValueError, match="top-level keys must be 'shared' and 'profiles'"):
        check_params_file(layout, tmp_path / "09_x.ipynb")
