"""mu.schedule: the fixed schedule and the adaptive merge decision (pure functions, no training)."""

from __future__ import annotations

import pytest

from mu import schedule

P = dict(max_epochs=20, min_interval=1, max_interval=4, patience=2, convergence_threshold=0.01, performance_drop=0.0)


def dev(*rows):
    return [dict(zip(("a", "b"), r)) for r in rows]


def test_improving_sources_are_not_merged_until_max_interval():
    hist = dev((0.2, 0.3), (0.4, 0.5), (0.6, 0.7))
    assert schedule.decide(hist[:1], epochs_done=1, **P)[:2] == (False, "improving")
    assert schedule.decide(hist, epochs_done=3, **P)[:2] == (False, "improving")
    merge, reason, detail = schedule.decide(hist + dev((0.7, 0.8)), epochs_done=4, **P)
    assert (merge, reason) == (True, "max_interval") and "max_interval=4" in detail


def test_convergence_over_the_patience_window():
    # mean 0.5 -> 0.6 -> 0.605 -> 0.607: the best of the last 2 epochs gains 0.007 < 0.01 on the best before
    hist = dev((0.4, 0.6), (0.5, 0.7), (0.52, 0.69), (0.51, 0.704))
    tolerant = {**P, "performance_drop": 0.05}  # b's 0.7 -> 0.69 is no trigger here
    assert schedule.decide(hist[:3], epochs_done=3, **tolerant)[:2] == (False, "improving")  # gain 0.105
    merge, reason, detail = schedule.decide(hist, epochs_done=4, **tolerant)
    assert (merge, reason) == (True, "convergence") and "+0.0070 over the last 2 epoch(s)" in detail
    # with no tolerance, b's drop merges at epoch 3 already
    assert schedule.decide(hist[:3], epochs_done=3, **P)[1] == "performance_drop"
    # patience 1 sees the plateau one epoch earlier
    assert (
        schedule.decide(hist[:3], epochs_done=3, **{**P, "patience": 1, "performance_drop": 0.05})[1] == "convergence"
    )


def test_a_drop_of_one_source_triggers_a_merge():
    hist = dev((0.5, 0.5), (0.6, 0.55))
    merge, reason, detail = schedule.decide(hist, epochs_done=2, **{**P, "performance_drop": 0.02})
    assert (merge, reason) == (False, "improving")
    merge, reason, detail = schedule.decide(
        dev((0.5, 0.6), (0.7, 0.55)), epochs_done=2, **{**P, "performance_drop": 0.02}
    )
    assert (merge, reason) == (True, "performance_drop") and detail.startswith("b dev accuracy fell 0.6000 -> 0.5500")
    # a drop within the tolerance is not a trigger; 1.0 switches the trigger off
    assert schedule.decide(dev((0.5, 0.6), (0.7, 0.59)), epochs_done=2, **{**P, "performance_drop": 0.02})[0] is False
    assert (
        schedule.decide(dev((0.5, 0.6), (0.9, 0.1)), epochs_done=2, **{**P, "performance_drop": 1.0})[1] == "improving"
    )


def test_bounds_and_the_last_epoch():
    flat = dev((0.5, 0.5), (0.5, 0.5), (0.5, 0.5))
    # min_interval holds back even a converged / dropping run
    assert schedule.decide(flat[:2], epochs_done=2, **{**P, "min_interval": 3})[:2] == (False, "min_interval")
    assert schedule.decide(flat, epochs_done=3, **{**P, "min_interval": 3})[:2] == (True, "convergence")
    # the last epoch always merges, whatever the curves say
    assert schedule.decide(flat[:1], epochs_done=20, **P)[:2] == (True, "end")


def test_fixed_schedule_and_argument_checks():
    assert schedule.fixed(9, 3) == [3, 3, 3] and schedule.fixed(5, 2) == [2, 2, 1]
    assert schedule.check("fixed", 9, 3) is None
    assert schedule.check("adaptive", 9, None) == schedule.ADAPTIVE_DEFAULTS
    assert schedule.check("adaptive", 9, None, max_interval=5, patience=None)["max_interval"] == 5
    with pytest.raises(ValueError, match=r"unknown merge_schedule 'smart'; valid: \['fixed', 'adaptive'\]"):
        schedule.check("smart", 9, 3)
    with pytest.raises(ValueError, match=r"\['patience'\] apply to merge_schedule='adaptive'"):
        schedule.check("fixed", 9, 3, patience=2)
    with pytest.raises(ValueError, match="merge_frequency applies to merge_schedule='fixed'"):
        schedule.check("adaptive", 9, 3)
    with pytest.raises(ValueError, match=r"min_interval \(4\) must be <= max_interval \(2\)"):
        schedule.check("adaptive", 9, None, min_interval=4, max_interval=2)
    with pytest.raises(ValueError, match="convergence_threshold must be a finite number >= 0"):
        schedule.adaptive_params(convergence_threshold=-1)
    with pytest.raises(ValueError, match=r"unknown adaptive schedule parameter\(s\) \['patient'\]"):
        schedule.adaptive_params(patient=2)
    with pytest.raises(ValueError, match="same sources"):
        schedule.decide([{"a": 0.1}, {"b": 0.2}], epochs_done=2, **P)
