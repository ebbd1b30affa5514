"""The fast formulation (docs/model.md, "Exact rewrites") trains like the reference one: from the
same weights and data, 200 steps on mini-CLEVR give loss curves that stay within a stated band."""

from __future__ import annotations

from pipeline.training.checkpoint import load as load_checkpoint
from pipeline.training.loop import LocalReporter, WorkerContext, train_loop
from tests.conftest import tiny_config

STEPS = 200
BAND = 1e-4  # relative difference of the logged losses (each the mean over 10 steps)


def curve(tiny_data, work, fast: bool) -> dict[int, float]:
    config = tiny_config(
        tiny_data,
        work,
        model={"fast": fast, "dropout_keep": 1.0},
        iterations=STEPS,
        log_every=10,
        eval_every=STEPS,
        checkpoint_every=STEPS,
        learning_rate=1e-3,
    )
    train_loop(config, WorkerContext(), LocalReporter(work / "ck"), {})
    history = load_checkpoint(sorted((work / "ck").glob("step_*"))[-1]).history
    return {row["step"]: row["vqa_loss_total"] for row in history}


def test_fast_and_reference_loss_curves_agree_over_200_steps(tiny_data, tmp_path):
    fast = curve(tiny_data, tmp_path / "fast", fast=True)
    reference = curve(tiny_data, tmp_path / "reference", fast=False)
    assert fast.keys() == reference.keys() and len(fast) == STEPS // 10
    worst = max(abs(fast[s] - reference[s]) / abs(reference[s]) for s in reference)
    print(f"largest relative loss difference over {STEPS} steps: {worst:.2e} (band {BAND})")
    assert worst <= BAND
    assert reference[STEPS] < reference[10]  # it did learn
