"""One question's step trace (pipeline/runtime/inference.py), what the report and the demo show:
NoOp steps folded, the attention on top of the stack softmaxed over the cells, the words cut to
the question's length, the stack depth read off the pointer."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.runtime.inference import step_trace
from snmn.layout import MODULE_INDEX
from snmn.model import SNMNOutput

T, M, S, L = 4, 9, 5, 3


def output_for(layouts: list[list[str]]) -> SNMNOutput:
    """A batch whose question b runs layouts[b] (weight 0.8 on the named module)."""
    weights = torch.full((len(layouts), T, M), 0.2 / (M - 1))
    for b, layout in enumerate(layouts):
        for t, name in enumerate(layout):
            weights[b, t, MODULE_INDEX[name]] = 0.8
    generator = torch.Generator().manual_seed(0)
    return SNMNOutput(
        module_logits=weights.log(),
        module_weights=weights,
        text_attention=torch.rand(len(layouts), T, S, generator=generator),
        top_attention=torch.randn(len(layouts), T, 2, 3, generator=generator),
        stack_pointers=torch.eye(L)[torch.tensor([[1, 2, 1, 1]] * len(layouts))],
    )


def test_noop_steps_are_folded_and_each_map_is_a_softmax_over_the_cells():
    layout = ["Find", "Find", "DescribeTwo", "NoOp"]
    output = output_for([["NoOp"] * T, layout])
    trace = step_trace(output, 1, length=3)
    assert trace.shown == [0, 1, 2] and trace.folded == [3]
    assert trace.modules.tolist() == [MODULE_INDEX[name] for name in layout]
    assert trace.module_weights.shape == (T, M)
    assert np.array_equal(trace.text_attention, output.text_attention[1, :, :3].numpy())
    assert trace.attention.shape == (T, 2, 3)
    assert np.allclose(trace.attention.sum(axis=(1, 2)), 1.0)
    expected = output.top_attention[1].flatten(1).softmax(dim=1).view(T, 2, 3).numpy()
    assert np.array_equal(trace.attention, expected)
    assert trace.depth.tolist() == [1, 2, 1, 1]


def test_a_question_run_as_noop_only_shows_every_step():
    trace = step_trace(output_for([["NoOp"] * T]), 0, length=S)
    assert trace.shown == list(range(T)) and trace.folded == []
