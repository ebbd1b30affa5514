"""Losses, the entropy ramp, the weight-decay split and the EMA helper."""

import copy
import math

import pytest
import torch

from snmn import losses
from snmn.config import ModelConfig
from snmn.ema import ModelEMA
from snmn.model import SNMN, SNMNOutput

TINY = ModelConfig(
    vocab_size=10,
    feature_dim=8,
    feature_height=2,
    feature_width=2,
    embed_dim=6,
    lstm_dim=8,
    pos_enc_dim=4,
    kb_dim=8,
    memory_dim=8,
    num_answers=3,
    vqa_hidden_dim=8,
    num_steps=3,
    stack_length=4,
    task="joint",
)


def test_offset_loss_reads_the_target_cell_only():
    offsets = torch.zeros(2, 5, 4)
    offsets[0, 3] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    offsets[1, 0] = 7.0  # not a target cell: ignored
    loss = losses.offset_loss(offsets, torch.tensor([3, 1]), torch.zeros(2, 4))
    assert math.isclose(loss.item(), (1 + 4 + 9 + 16) / 8)


def test_layout_loss_averages_over_batch_and_steps():
    logits = torch.zeros(2, 3, 9)
    logits[:, :, 0] = 100.0  # confident NoOp everywhere
    layouts = torch.zeros(2, 3, dtype=torch.int64)
    assert losses.layout_loss(logits, layouts).item() < 1e-6
    layouts[0, 1] = 4  # one of six steps wrong by a margin of 100
    assert math.isclose(losses.layout_loss(logits, layouts).item(), 100 / 6, rel_tol=1e-4)


def test_entropy_of_uniform_and_one_hot_weights():
    uniform = torch.full((2, 3, 9), 1 / 9)
    assert math.isclose(losses.module_entropy(uniform).item(), math.log(9), rel_tol=1e-6)
    one_hot = torch.nn.functional.one_hot(torch.zeros(2, 3, dtype=torch.int64), 9).float()
    assert losses.module_entropy(one_hot).item() == 0.0


def test_entropy_ramp_is_linear_between_150k_and_160k():
    assert losses.entropy_ramp(0) == 0.0
    assert losses.entropy_ramp(149_999) == 0.0
    assert losses.entropy_ramp(155_000) == 0.5
    assert losses.entropy_ramp(160_000) == 1.0 and losses.entropy_ramp(10**6) == 1.0


def test_training_loss_weights_its_terms():
    output = SNMNOutput(
        module_logits=torch.randn(2, 3, 9),
        module_weights=torch.full((2, 3, 9), 1 / 9),
        text_attention=torch.zeros(2, 3, 4),
        answer_logits=torch.randn(2, 5),
        cell_scores=torch.randn(2, 6),
        box_offsets=torch.randn(2, 6, 4),
    )
    answers, cells, targets = torch.tensor([1, 2]), torch.tensor([0, 5]), torch.zeros(2, 4)
    terms = losses.training_loss(
        output,
        answers=answers,
        target_cells=cells,
        target_offsets=targets,
        cell_weight=0.5,
        offset_weight=0.5,
        entropy_weight=0.1,
    )
    expected = terms["answer"] + 0.5 * terms["cell"] + 0.5 * terms["offset"]
    expected = expected + 0.1 * terms["entropy"]
    assert torch.allclose(terms["total"], expected)
    assert "layout" not in terms
    with pytest.raises(ValueError, match="no targets"):
        losses.training_loss(output)


def test_weight_decay_covers_conv_and_linear_weights_only():
    model = SNMN(TINY)
    decayed, rest = losses.decayed_parameters(model)
    names = {id(p): name for name, p in model.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed}
    rest_names = {names[id(p)] for p in rest}
    assert all(name.endswith(".weight") for name in decayed_names)
    assert "controller.step_projection.weight" in decayed_names
    assert "nmn.Find.conv.weight" in decayed_names and "box_head.offsets.weight" in decayed_names
    for kept in [
        "text_encoder.embedding.weight",
        "controller.initial_control",
        "box_head.score_scale",
        "box_head.score_bias",
        "knowledge_base.conv1.bias",
    ]:
        assert kept in rest_names, kept
    assert not any("lstm" in name for name in decayed_names)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(decayed) == len(linears)
    trainable = sum(p.requires_grad for p in model.parameters())
    assert len(decayed) + len(rest) == trainable
    groups = losses.parameter_groups(model, 1e-5)
    assert [g["weight_decay"] for g in groups] == [1e-5, 0.0]


def test_the_l2_gradient_is_that_of_half_the_sum_of_squares_in_the_loss():
    used = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    unused = torch.nn.Parameter(torch.ones(2, 2))  # no task gradient (CLEVR-Ref's Describe)
    (2 * used).sum().backward()
    losses.add_l2_gradient([used, unused], 1e-2)
    # autograd on loss + wd · Σ ||w||² / 2, as the official release writes it
    twin_used, twin_unused = (torch.nn.Parameter(p.detach().clone()) for p in (used, unused))
    penalty = (twin_used.pow(2).sum() + twin_unused.pow(2).sum()) / 2
    ((2 * twin_used).sum() + 1e-2 * penalty).backward()
    torch.testing.assert_close(used.grad, twin_used.grad)
    torch.testing.assert_close(unused.grad, twin_unused.grad)


def test_ema_starts_as_a_copy_and_moves_by_one_minus_decay():
    torch.manual_seed(0)
    model = SNMN(TINY)
    ema = ModelEMA(model, decay=0.9)
    for a, b in zip(ema.average.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    before = copy.deepcopy(ema.average.state_dict())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    ema.update(model)
    after = ema.average.state_dict()
    for name, parameter in model.named_parameters():
        expected = before[name] + 0.1 * (parameter - before[name])
        assert torch.allclose(after[name], expected, atol=1e-6), name
    assert not any(p.requires_grad for p in ema.average.parameters())
    restored = ModelEMA(SNMN(TINY))
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.9
    assert torch.equal(restored.average.nmn.Find.conv.weight, ema.average.nmn.Find.conv.weight)
