"""Each module's effect on a hand-made stack, pointer and memory; fast rewrites == reference."""

import pytest
import torch

from snmn import modules as nm
from snmn import stack as st
from snmn.layout import MODULE_NAMES
from snmn.shared_products import SharedOperand
from snmn.stack import StackState

CELLS, LENGTH, KB_DIM, CONTROL_DIM, MEMORY_DIM = 4, 5, 6, 3, 7
A1 = torch.tensor([[1.0, -2.0, 3.0, 0.5]])  # map in slot 1 (bottom real map)
A2 = torch.tensor([[0.0, 4.0, -1.0, 2.0]])  # map in slot 2 (top)
FOUND = torch.tensor([[2.0, -3.0, 5.0, 0.0]])
SCENE = torch.tensor([[0.3, 0.2, 0.1, 0.0]])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_hot(position: int) -> torch.Tensor:
    pointer = torch.zeros(1, LENGTH)
    pointer[0, position] = 1.0
    return pointer


def two_map_state() -> StackState:
    """Slot 0 is the empty sentinel, slots 1 and 2 hold A1 and A2, pointer at 2."""
    stack = torch.zeros(1, CELLS, LENGTH)
    stack[:, :, 1], stack[:, :, 2] = A1, A2
    return StackState(stack, one_hot(2), torch.arange(MEMORY_DIM, dtype=torch.float32)[None])


def step_inputs(fast: bool = False, state: StackState | None = None) -> nm.StepInputs:
    torch.manual_seed(0)
    kb = torch.randn(1, CELLS, KB_DIM)
    inputs = nm.StepInputs(
        control=torch.randn(1, CONTROL_DIM), kb=kb, find_map=FOUND, scene_map=SCENE, guard=True
    )
    if fast:
        top = st.read(state.stack, state.pointer)
        below = st.read(state.stack, st.pop(state.pointer))
        inputs.kb_transposed = SharedOperand(kb.transpose(1, 2).contiguous())
        inputs.kb_squared_transposed = SharedOperand(kb.transpose(1, 2).pow(2))
        inputs.pooled = st.attended_features(kb, torch.stack([top, below], dim=1))
    return inputs


@pytest.fixture
def modules():
    torch.manual_seed(1)
    return nm.build_modules(MODULE_NAMES, CONTROL_DIM, KB_DIM, MEMORY_DIM)


def test_modules_come_in_the_fixed_order(modules):
    assert tuple(modules) == MODULE_NAMES


def test_noop_carries_stack_pointer_and_memory(modules):
    state = two_map_state()
    out = modules["NoOp"](state, step_inputs())
    assert out.stack is state.stack and out.pointer is state.pointer and out.memory is state.memory


def test_find_pushes_its_map_and_zeroes_memory(modules):
    state = two_map_state()
    out = modules["Find"](state, step_inputs())
    assert torch.equal(out.pointer, one_hot(3))
    assert torch.equal(out.stack[:, :, 3], FOUND)
    assert torch.equal(out.stack[:, :, :3], state.stack[:, :, :3])
    assert out.memory.abs().sum() == 0


def test_scene_pushes_the_scene_map(modules):
    out = modules["Scene"](two_map_state(), step_inputs())
    assert torch.equal(out.pointer, one_hot(3)) and torch.equal(out.stack[:, :, 3], SCENE)


def test_and_is_min_and_or_is_max_of_the_top_two(modules):
    for name, expected in [("And", torch.minimum(A1, A2)), ("Or", torch.maximum(A1, A2))]:
        out = modules[name](two_map_state(), step_inputs())
        assert torch.equal(out.pointer, one_hot(1)), name
        assert torch.equal(out.stack[:, :, 1], expected), name
        assert out.memory.abs().sum() == 0


def test_filter_is_find_then_and(modules):
    state = two_map_state()
    out = modules["Filter"](state, step_inputs())
    assert torch.equal(out.pointer, one_hot(2))  # pop 1, push 1
    assert torch.equal(out.stack[:, :, 2], torch.minimum(A2, FOUND))
    assert torch.equal(out.stack[:, :, 1], A1)
    found = modules["Find"](state, step_inputs())
    chained = modules["And"](found, step_inputs())
    assert torch.equal(out.stack, chained.stack) and torch.equal(out.pointer, chained.pointer)
    assert list(modules["Filter"].parameters()) == []


def test_transform_rewrites_the_top_in_place(modules):
    state, inputs = two_map_state(), step_inputs()
    out = modules["Transform"](state, inputs)
    transform = modules["Transform"]
    pooled = (A2.softmax(1)[:, :, None] * inputs.kb).sum(1)
    product = inputs.kb * (transform.map_control(inputs.control) * pooled)[:, None, :]
    expected = transform.conv(product / product.norm(dim=2, keepdim=True)).squeeze(2)
    assert torch.equal(out.pointer, state.pointer)
    assert torch.allclose(out.stack[:, :, 2], expected, atol=1e-6)
    assert torch.equal(out.stack[:, :, :2], state.stack[:, :, :2])


def test_describe_modules_leave_the_stack_and_write_memory(modules):
    for name in ["DescribeOne", "DescribeTwo"]:
        state = two_map_state()
        out = modules[name](state, step_inputs())
        assert out.stack is state.stack and out.pointer is state.pointer, name
        assert out.memory.shape == (1, MEMORY_DIM) and not torch.equal(out.memory, state.memory)


def test_describe_one_reads_only_the_top_and_describe_two_the_top_two(modules):
    def memory(name, slot, change):
        state = two_map_state()
        state.stack[:, :, slot] += change
        return modules[name](state, step_inputs()).memory

    bump = torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    base_one, base_two = memory("DescribeOne", 0, 0.0), memory("DescribeTwo", 0, 0.0)
    assert torch.equal(memory("DescribeOne", 1, bump), base_one)
    assert not torch.allclose(memory("DescribeOne", 2, bump), base_one)
    assert not torch.allclose(memory("DescribeTwo", 1, bump), base_two)
    assert torch.equal(memory("DescribeTwo", 0, bump), base_two)


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_fast_rewrites_equal_the_reference(modules, name):
    state = two_map_state()
    reference = modules[name](state, step_inputs())
    fast = modules[name](state, step_inputs(fast=True, state=state))
    for a, b in [(reference.stack, fast.stack), (reference.memory, fast.memory)]:
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(reference.pointer, fast.pointer)


def test_find_and_scene_maps_fast_equal_reference(modules):
    torch.manual_seed(2)
    kb, controls = torch.randn(2, CELLS, KB_DIM), torch.randn(2, 3, CONTROL_DIM)
    kb_t = kb.transpose(1, 2).contiguous()
    shared = SharedOperand(kb_t), SharedOperand(kb_t.pow(2))
    fast = modules["Find"].attention_all_steps(*shared, controls)
    for step in range(3):
        reference = modules["Find"].attention(kb, controls[:, step])
        assert torch.allclose(fast[:, step], reference, atol=1e-5)
    scene = modules["Scene"]
    assert torch.allclose(scene.attention_fast(kb_t, kb_t.pow(2)), scene.attention(kb), atol=1e-5)


def test_validity_matrix_allows_pops_and_pushes_that_fit(modules):
    valid = nm.validity_matrix(modules, LENGTH)  # [L, M]
    column = {name: valid[:, i].tolist() for i, name in enumerate(MODULE_NAMES)}
    assert column["NoOp"] == [1, 1, 1, 1, 1]
    assert column["Find"] == [1, 1, 1, 1, 0]  # a push needs a free slot
    assert column["Transform"] == [0, 1, 1, 1, 1]
    assert column["And"] == [0, 0, 1, 1, 1]
    assert column["DescribeTwo"] == [0, 0, 1, 1, 1]
