"""mu.batching / mu.loop: length-bucketed batches (every example once, seeded, results in the original order)
and the fine-tuning loop's optimiser and schedule, the same as the HF Trainer's they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mu import batching, evaluate, loop, models
from mu import data as mu_data


def lengths(n, seed=0):
    return np.random.default_rng(seed).integers(3, 40, size=n)


@pytest.mark.parametrize("n,batch_size", [(2000, 32), (100, 32), (96, 32), (5, 8), (1000, 7)])
def test_an_epoch_sees_every_example_once_in_ceil_n_over_b_batches(n, batch_size):
    batches = batching.bucketed_batches(lengths(n), batch_size, torch.Generator().manual_seed(1))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(n))
    assert len(batches) == -(-n // batch_size)
    assert sum(len(b) != batch_size for b in batches) == (n % batch_size != 0)


def test_batches_are_deterministic_in_the_seed_and_pad_far_less_than_random_ones():
    ls = lengths(2000)
    draw = lambda seed: batching.bucketed_batches(ls, 32, torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = draw(3), draw(3), draw(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))
    # two epochs from one generator differ (the loop draws every epoch from the same generator)
    g = torch.Generator().manual_seed(3)
    first, second = batching.bucketed_batches(ls, 32, g), batching.bucketed_batches(ls, 32, g)
    assert any(not np.array_equal(x, y) for x, y in zip(first, second))
    padded = sum(len(x) * ls[x].max() for x in a)
    random = np.random.default_rng(0).permutation(2000)
    padded_random = sum(32 * ls[random[i : i + 32]].max() for i in range(0, 2000, 32))
    assert padded < 0.75 * padded_random and padded < 1.1 * ls.sum()
    # batches of both lengths come anywhere in the epoch, not the long ones first
    widths = [ls[x].max() for x in a]
    assert max(widths[:10]) > np.median(widths) > min(widths[:10])


def test_sorted_batches_and_collate():
    ls = np.array([3, 7, 7, 1, 5])
    assert [b.tolist() for b in batching.sorted_batches(ls, 2)] == [[1, 2], [4, 0], [3]]
    ids = np.arange(5 * 7).reshape(5, 7)
    batch, mask = batching.collate(ids, ls, np.array([4, 0]))
    assert batch.shape == (2, 5) and mask.tolist() == [[1] * 5, [1, 1, 1, 0, 0]]
    assert batch.tolist() == [ids[4, :5].tolist(), ids[0, :5].tolist()]


@pytest.mark.parametrize("max_seq_length", [64, 6])
def test_token_ids_are_the_tokenizers_own_and_leave_its_settings(toy_base, max_seq_length):
    _, tokenizer = models.load_classifier(toy_base)
    texts = list(mu_data.load_split("de-DE", "test", "toy")["text"])[:40] + ["", "a <mask> b"]
    tokenizer(["x y z"], padding="max_length", max_length=12)  # the backend now pads to 12
    backend = tokenizer.backend_tokenizer
    settings = (backend.truncation, backend.padding)
    ids = batching.token_ids(tokenizer, texts, max_seq_length)
    assert (backend.truncation, backend.padding) == settings
    assert ids == tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]
    assert max(map(len, ids)) == min(max_seq_length, 27)  # the longest toy test utterance: 27 tokens


def test_evaluation_returns_logits_in_the_texts_order(toy_base):
    model, tokenizer = models.load_classifier(toy_base)
    texts = list(mu_data.load_split("de-DE", "test", "toy")["text"])[:50]
    perm = np.random.default_rng(0).permutation(len(texts))
    whole = evaluate.forward(model, tokenizer, texts, batch_size=8, max_seq_length=64)
    shuffled = evaluate.forward(model, tokenizer, [texts[i] for i in perm], batch_size=8, max_seq_length=64)
    one = np.concatenate([evaluate.forward(model, tokenizer, [t], batch_size=1, max_seq_length=64) for t in texts])
    np.testing.assert_allclose(shuffled, whole[perm], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(whole, one, rtol=1e-4, atol=1e-5)  # padding changes nothing but rounding


def _trainer(model, tmp_path, lr_end):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=1e-3,
        warmup_steps=0.06,
        lr_scheduler_type="polynomial" if lr_end else "linear",
        lr_scheduler_kwargs={"lr_end": lr_end, "power": 1.0} if lr_end else {},
        weight_decay=0.01,
        report_to=[],
    )
    return Trainer(model=model, args=args)


@pytest.mark.parametrize("lr_end", [0.0, 2e-4])
def test_schedule_and_optimizer_are_the_trainers(toy_base, tmp_path, lr_end):
    steps = 189  # 3 epochs of 2,000 utterances at batch 32: the warmup is ceil(0.06 × 189) = 12 steps
    model, _ = models.load_classifier(toy_base)
    trainer = _trainer(model, tmp_path, lr_end)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    settings = loop.Settings(epochs=3, batch_size=32, lr=1e-3, seed=0, lr_end=lr_end, warmup=0.06)
    opt = loop.optimizer(model, 1e-3)
    sched = loop.scheduler(opt, steps, settings)
    theirs, mine = [], []
    for _ in range(steps + 1):
        theirs.append(trainer.lr_scheduler.get_last_lr()[0])
        mine.append(sched.get_last_lr()[0])
        trainer.optimizer.step(), trainer.lr_scheduler.step(), opt.step(), sched.step()
    assert mine == theirs
    assert mine[0] == 0 and mine[12] == pytest.approx(1e-3) and mine[steps] == pytest.approx(lr_end)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = lambda o: sorted(  # noqa: E731
        (g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in o.param_groups if g["params"]
    )
    assert groups(opt) == groups(trainer.optimizer)
    assert any("LayerNorm" in n for _, ns in groups(opt) if _ == 0 for n in ns)
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(opt) is type(inner)
    assert {k: opt.defaults[k] for k in ("fused", "betas", "eps")} == {
        k: inner.defaults[k] for k in ("fused", "betas", "eps")
    }


@pytest.mark.parametrize("scale", [1e-3, 10.0])
def test_clip_grad_norm_gives_torchs_gradients(scale):
    def params():
        torch.manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(50, 8)) for _ in range(3)]
        for p in ps:
            p.grad = torch.randn_like(p) * scale
        return ps

    mine, theirs = params(), params()
    assert torch.equal(loop.clip_grad_norm(mine, 1.0), torch.nn.utils.clip_grad_norm_(theirs, 1.0))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(mine, theirs))
