"""Performance benchmark of ``mu`` (``make bench`` / ``python -m bench``).

Measured in one run, on random-init XLM-R classifiers (``bench.sizes``):

1. merging N = 2, 5, 10 models (``linear``, ``ties``) with ``mu.merge.merge_models``
   beside the mergekit CLI (``mergekit-yaml``) on the same checkpoints and beside
   the read floor (reading the same bytes with ``safetensors``); wall time and peak
   RSS of each in its own process (``bench.proc``);
2. evaluation throughput of ``mu.evaluate.logits`` vs a naive loop (fixed padding
   to max length, batch 32) on the same model and test set;
3. a K = 5 ensemble from cached logits vs recomputing the K forwards;
4. how cost grows: merge time vs N and evaluation time vs test size (least-squares slopes).

Results: ``reports/bench/results.json`` (atomic) and ``results.md`` (the table).
"""
