"""What each notebook parameter means, and the notebooks' generated text: the comment each `parameters`
cell carries and the tables in their markdown cells.

A parameters cell reads ``name = value  # what it means; valid: ...``: the meaning comes from ``MEANING``
below, the valid values from the parameter's declaration (``mu.batch.checks.PARAMETERS``), so the
comment and the check never disagree. Markdown cells hold ``mu:table`` blocks (notebook 03's method
catalog) rendered by ``mu.publish.docs``. ``python -m mu docs`` rewrites both (``update``);
``tests/test_checks.py`` requires a meaning for every parameter of every notebook and the committed
notebooks to be what ``update`` writes.
"""

from __future__ import annotations

import io
import json
import re
import tokenize
from pathlib import Path

from mu.core import paths
from mu.publish import docs

MEANING = {
    # where the run reads and writes
    "profile": "which setting: toy (generated data, tiny model), mini (real MASSIVE, small encoder), massive",
    "target_lang": "the target locale: never a source, never trained on",
    "data": "where the data come from: toy, hub, or a MASSIVE-layout folder",
    "models_dir": "the folder holding one fine-tuned model per locale",
    "base_model": "the pretrained model every source fine-tunes from (the base of task-vector merges)",
    "locales": "the locales to fine-tune a source model for",
    "seed": "seed of every random draw of this notebook",
    "report_to": "experiment tracking of fine-tuning: none or a backend",
    # similarity and weights
    "feature_set": "URIEL feature set(s) whose cosine similarity weighs the sources ('+' joins sets)",
    "feature_sets": "URIEL feature sets compared against measured transfer",
    "similarity_source": "URIEL vectors with missing values left out (sparse) or predicted (dense)",
    "mode": "how the sources are weighted: similarity (URIEL), average (equal), transfer (N×N on other targets)",
    "modes": "the weightings to run",
    "compare_modes": "further weightings run beside mode, on the same sources",
    "num_languages": "how many sources a target is built from (the closest under the weighting)",
    "top_k": "neighbours kept per language before Sinkhorn normalisation",
    "sinkhorn_iters": "Sinkhorn iterations that balance the similarity matrix",
    # fine-tuning
    "epochs": "fine-tuning epochs of each source",
    "lr": "fine-tuning learning rate",
    "batch_size": "examples per batch",
    "max_seq_length": "tokens per utterance kept",
    # merging
    "method": "the merge method (mu.merge.catalog)",
    "merge_algorithm": "the merge method of each periodic merge (mu.merge.catalog)",
    "density": "the method's density knob, None for its default (the catalog checks it with the method)",
    "lambda_": "the method's scale of the task vector, None for its default",
    "gamma": "breadcrumbs' share of outliers dropped, None for its default",
    "alpha": "regmean's (or ramplus_tl's) alpha, None for its default",
    "head": "merge the classifier heads, or keep one source's (a locale)",
    "embeddings": "merge the embeddings, or keep one source's (a locale)",
    "fisher_num_examples": "examples per source for Fisher / Gram statistics",
    "fisher_batch_size": "batch size of the statistics",
    "compare_methods": "every other merge method run on the same sources: 'all', a list, or []",
    "keep_merged": "keep each merged model folder after it is evaluated",
    # label-free adaptation
    "adamerging": "AdaMerging granularities to fit on the target's unlabeled text ([]: none)",
    "adapt_selection": "how AdaMerging's and distillation's settings are chosen, never with the target's labels",
    "adapt_constraint": "how AdaMerging keeps its coefficients",
    "adapt_steps": "AdaMerging step counts to choose among",
    "adapt_lr": "AdaMerging's learning rate",
    "adapt_split": "which of the target's texts adaptation reads (labels never read)",
    "adapt_num_examples": "how many unlabeled texts adaptation reads (None: all)",
    "adapt_held_out": "share of the unlabeled texts held out to stop or choose label-free",
    "adapt_batch_size": "batch size of adaptation",
    "tuning_targets": "declared targets whose dev labels may choose settings; reported apart",
    # STS
    "sts_data": "sentence-similarity pairs to probe the encoders with",
    "sts_locale": "the locale of the STS pairs (None: the target's)",
    "sts_score_range": "the gold scores' range",
    # ensembling and distillation
    "methods": "output-space ensembles to run",
    "max_k": "largest number of sources in the accuracy-vs-K curve",
    "distill": "train one student on the ensemble's outputs over the target's unlabeled text",
    "distill_teachers": "ensembles the teacher is chosen among (None: every method × weighting)",
    "distill_selection": "how the teacher and the student's settings are chosen",
    "distill_inits": "merges the student may start from ('all' or a list)",
    "distill_lrs": "student learning rates to choose among",
    "distill_eval_every": "steps between the student's held-out checks (None: each epoch)",
    "distill_patience": "held-out checks without improvement before the student stops",
    "distill_mode": "the teacher's weighting (None: chosen)",
    "distill_temperature": "softmax temperature of the teacher's outputs",
    "distill_epochs": "most epochs of the student",
    "distill_lr": "the student's learning rate when not chosen",
    "distill_batch_size": "the student's batch size",
    # iterative training
    "max_epochs": "epochs each source trains in all (None: notebook 02's)",
    "merge_frequency": "epochs between merges of the fixed schedule",
    "iterative": "train the iterative model (merge every merge_frequency epochs); False: only the joint models",
    "adaptive_schedule": "merge when the sources converge or drop (True) or on the fixed schedule (False)",
    "min_interval": "fewest epochs between two merges",
    "max_interval": "most epochs between two merges",
    "patience": "epochs over which convergence is judged",
    "convergence_threshold": "dev-accuracy gain below which a source counts as converged",
    "performance_drop": "dev-accuracy drop of a source that triggers a merge",
    # joint training
    "joint": "joint models: one on the union of each weighting's sources' labeled data; 'all': every other source",
    "joint_all_examples": "examples joint/all sees (None: the budget of joint/similarity)",
    # aggregation
    "n_boot": "bootstrap replicates of every interval and sign flips of every paired test",
    "min_pairs": "fewest paired targets a paired test needs",
    "average_system": "the equal-weight merge every merge is compared with",
    "seeds": "fine-tuning seeds whose runs repeat the headline comparisons",
    "seed_targets": "the declared targets those runs cover",
    "preregistration": "the pre-registration whose hypotheses the confirmatory analysis tests (the checkout's path)",
    "confirmatory": "test the registered hypotheses on seed_targets in every registered seed (confirmatory.md / .csv)",
}


def comment(name: str) -> str:
    """``# <meaning>; valid: <declaration>`` for one parameter."""
    from mu.batch import checks

    spec = checks.PARAMETERS.get(name)
    valid = "" if spec is None else _short(str(spec.valid))
    text = f"# {MEANING[name]}" + (f"; valid: {valid}" if valid else "")
    # papermill reads a line with a second '=' as no parameter at all; its help shows the comment
    return text.replace(">=", "≥").replace("<=", "≤").replace("=", " is ")


def _short(valid: str, most: int = 6, width: int = 110) -> str:
    """A long run of names shortened to its first few and a count, a long text cut (the check's error
    message says it all)."""

    def cut(m: re.Match) -> str:
        names = re.findall(r"'[^']*'", m.group(0))
        return f"{', '.join(names[:3])}, … ({len(names)} names)"

    valid = re.sub(r"'[^']*'(?:, '[^']*'){" + str(most) + ",}", cut, valid)
    return valid if len(valid) <= width else valid[: width - 1].rstrip(" ,") + "…"


def _code_and_comment(line: str) -> tuple[str, bool]:
    """The line without its comment (tokenized, so a ``#`` inside a string stays), and whether it had one."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, SyntaxError):
        return line, False
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            return line[: tok.start[1]].rstrip(), True
    return line.rstrip(), False


def annotate(source: str) -> str:
    """A parameters cell with each ``name = value`` line's comment (re)written; other lines as they are."""
    out = []
    for line in source.splitlines():
        code, _ = _code_and_comment(line)
        name, eq, value = code.partition("=")
        name = name.strip()
        if eq and name in MEANING and value.strip():
            line = f"{name} = {value.strip()}  {comment(name)}"
        out.append(line)
    return "\n".join(out)


def rewrite_notebook(text: str, where: str) -> str:
    """The notebook with its parameters cell annotated and its markdown tables regenerated, written as
    Jupyter writes it (sorted keys, one-space indent), so a notebook already up to date is unchanged."""
    nb = json.loads(text)
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            new = docs.rewrite(source, where)
        elif "parameters" in cell.get("metadata", {}).get("tags", []):
            new = annotate(source)
        else:
            continue
        if new != source:
            cell["source"] = new.splitlines(keepends=True)
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def update(check: bool = False, notebooks_dir: str = "notebooks") -> list[Path]:
    """Rewrite every numbered notebook's generated text; the notebooks that differ (``check``: unchanged)."""
    changed = []
    for nb in sorted(paths.source_dir(notebooks_dir).glob("[0-9][0-9]_*.ipynb")):
        text = nb.read_text(encoding="utf-8")
        new = rewrite_notebook(text, f"{notebooks_dir}/{nb.name}")
        if new != text:
            changed.append(nb)
            if not check:
                paths.write_text(nb, new)
    return changed
