"""The differentiable stack on small hand-made stacks (lengths 4 to 9)."""

import pytest
import torch

from snmn import stack as st


def one_hot(position: int, length: int) -> torch.Tensor:
    pointer = torch.zeros(1, length)
    pointer[0, position] = 1.0
    return pointer


@pytest.mark.parametrize("length", range(4, 10))
def test_push_and_pop_move_the_pointer_one_slot(length):
    for position in range(length - 1):
        assert torch.equal(st.push(one_hot(position, length)), one_hot(position + 1, length))
        assert torch.equal(st.pop(one_hot(position + 1, length)), one_hot(position, length))


@pytest.mark.parametrize("length", range(4, 10))
def test_guard_keeps_the_pointer_at_the_top_and_bottom(length):
    top, bottom = one_hot(length - 1, length), one_hot(0, length)
    assert torch.equal(st.push(top, guard=True), top)
    assert torch.equal(st.pop(bottom, guard=True), bottom)
    # without the guard the pointer falls off the stack
    assert st.push(top, guard=False).sum() == 0
    assert st.pop(bottom, guard=False).sum() == 0


def test_push_and_pop_move_a_soft_pointer_as_a_whole():
    pointer = torch.tensor([[0.1, 0.6, 0.3, 0.0, 0.0]])
    assert torch.allclose(st.push(pointer), torch.tensor([[0.0, 0.1, 0.6, 0.3, 0.0]]))
    assert torch.allclose(st.pop(pointer), torch.tensor([[0.7, 0.3, 0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("length", range(4, 10))
def test_read_and_write_touch_only_the_pointed_slot(length):
    cells = 6
    stack = torch.arange(cells * length, dtype=torch.float32).view(1, cells, length)
    for position in range(length):
        pointer = one_hot(position, length)
        assert torch.equal(st.read(stack, pointer), stack[:, :, position])
        value = torch.full((1, cells), -7.0)
        written = st.write(stack, pointer, value)
        assert torch.equal(written[:, :, position], value)
        others = [i for i in range(length) if i != position]
        assert torch.equal(written[:, :, others], stack[:, :, others])


def test_soft_read_and_write_blend_slots():
    stack = torch.tensor([[[1.0, 3.0, 5.0, 0.0]]])  # one cell, L=4
    pointer = torch.tensor([[0.25, 0.75, 0.0, 0.0]])
    assert torch.allclose(st.read(stack, pointer), torch.tensor([[2.5]]))
    written = st.write(stack, pointer, torch.tensor([[9.0]]))
    assert torch.allclose(written, torch.tensor([[[3.0, 7.5, 5.0, 0.0]]]))


def test_initial_state_points_at_the_empty_bottom():
    state = st.initial_state(2, 9, 5, 3, like=torch.zeros(1))
    assert torch.equal(state.pointer, one_hot(0, 5).expand(2, -1))
    assert state.stack.shape == (2, 9, 5) and state.stack.abs().sum() == 0
    assert state.memory.shape == (2, 3) and state.memory.abs().sum() == 0


def test_sharpen_hard_is_one_hot_argmax_and_soft_is_tempered_softmax():
    pointer = torch.tensor([[0.2, 0.5, 0.3]])
    assert torch.equal(st.sharpen(pointer, "hard", 0.2), torch.tensor([[0.0, 1.0, 0.0]]))
    assert torch.allclose(st.sharpen(pointer, "soft", 0.2), (pointer / 0.2).softmax(1))


def test_attended_features_softmax_pools_the_kb():
    kb = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # [B=1, N=3, D=2]
    logits = torch.tensor([[[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]]])  # uniform, then cell 0
    pooled = st.attended_features(kb, logits)
    assert torch.allclose(pooled[0, 0], torch.tensor([2 / 3, 2 / 3]))
    assert torch.allclose(pooled[0, 1], torch.tensor([1.0, 0.0]))
