"""The nine neural modules (paper Table 1, docs/model.md "Modules"; official nmn.py).

"Is there a cube left of the red sphere?" runs Find[red sphere] → Transform[left of] →
Filter[cube] → DescribeOne[is there]. Every module reads the stack state (stack, pointer,
memory) and the step's control c_t and returns a new state; the model runs all nine and
averages their results with the controller's weights.

Maps over the grid are computed in one of two exactly equal ways: the reference formulation
materialises n(kb ⊙ v) over [B, N, D] as written in the paper; the fast one (docs/model.md, "Exact
rewrites") uses conv(n(kb ⊙ v)) = (kb · (w ⊙ v)) / ||kb ⊙ v|| + b with ||kb ⊙ v||² = kb² · v², i.e.
two matrix-vector products against kb and kb². Stack effects are shared code, so both paths move the
stack identically.

Shape legend: B batch, N = H·W cells, L stack slots, D kb channels, E control, K maps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snmn import stack as st
from snmn.kb import xavier_linear
from snmn.shared_products import SharedOperand
from snmn.stack import StackState

NORM_EPS_SQUARED = 1e-12  # TF l2_normalize: x · rsqrt(max(Σx², 1e-12)), as in the official code


@dataclass
class StepInputs:
    """Everything a module reads at step t besides the stack state."""

    control: Tensor  # [B, E] c_t
    kb: Tensor  # [B, N, D]
    find_map: Tensor  # [B, N] Find's map at this step (Filter reuses it)
    scene_map: Tensor  # [B, N]
    guard: bool  # stack pointer guard
    kb_transposed: SharedOperand | None = None  # [B, D, N]; set (with the next) → fast rewrites
    kb_squared_transposed: SharedOperand | None = None  # [B, D, N] elementwise square of kb
    pooled: Tensor | None = None  # [B, 2, D] x(top), x(below); set → shared by the fast path


def l2_normalize(x: Tensor) -> Tensor:
    """n(x) over the last axis, exactly as TF's l2_normalize."""
    return x * torch.rsqrt(x.pow(2).sum(dim=-1, keepdim=True).clamp_min(NORM_EPS_SQUARED))


def normalized_conv(kb: Tensor, query: Tensor, conv: nn.Linear) -> Tensor:
    """Reference conv1x1(n(kb ⊙ v)): kb [B, N, D], v [B, D] → map [B, N]."""
    return conv(l2_normalize(kb * query.unsqueeze(1))).squeeze(2)


def normalized_conv_fast(
    kb_transposed: SharedOperand,
    kb_squared_transposed: SharedOperand,
    queries: Tensor,
    conv: nn.Linear,
) -> Tensor:
    """The same for K queries [B, K, D] at once, via (w⊙v)·kb and v²·kb² → maps [B, K, N].

    Takes kb as [B, D, N] (contiguous): row-vector products against it are several times
    faster, forward and backward, than products against [B, N, D] on CPU.
    """
    numerator = kb_transposed.left_product(queries * conv.weight)  # [B, K, N]
    squared_norm = kb_squared_transposed.left_product(queries.pow(2))  # [B, K, N]
    return numerator * torch.rsqrt(squared_norm.clamp_min(NORM_EPS_SQUARED)) + conv.bias


def pooled_features(kb: Tensor, logits: Tensor) -> Tensor:
    """Reference x(a) = Σ_n softmax(a)_n kb_n, materialised: [B, N] → [B, D]."""
    return (logits.softmax(dim=1).unsqueeze(2) * kb).sum(dim=1)


def push_map(state: StackState, value: Tensor, guard: bool) -> StackState:
    """Push map `value` [B, N]; memory output 0."""
    pointer = st.push(state.pointer, guard)
    return StackState(
        st.write(state.stack, pointer, value), pointer, torch.zeros_like(state.memory)
    )


def pop_two_push_one(
    state: StackState, combine: Callable[[Tensor, Tensor], Tensor], guard: bool
) -> StackState:
    """Pop a2 (top) then a1, push combine(a1, a2) into a1's slot; memory output 0."""
    top = st.read(state.stack, state.pointer)
    pointer = st.pop(state.pointer, guard)
    below = st.read(state.stack, pointer)
    stack = st.write(state.stack, pointer, combine(below, top))
    return StackState(stack, pointer, torch.zeros_like(state.memory))


class NoOp(nn.Module):
    """Does nothing: "What color is the large cube?" needs only Find, DescribeOne and 7 NoOps.

    Stack, pointer and memory pass through unchanged; the only module that carries memory
    forward, so the answer written by DescribeOne survives to step T (paper Table 1, NoOp).
    """

    pops, pushes = 0, 0

    def forward(self, state: StackState, step: StepInputs) -> StackState:
        return state


class Find(nn.Module):
    """Finds the cells that match the words in c_t: "the large cube" → a map of large cubes.

    a = conv1x1(n(kb ⊙ W_f c_t)), pushed onto the stack (paper Table 1, Find).
    """

    pops, pushes = 0, 1

    def __init__(self, control_dim: int, kb_dim: int) -> None:
        super().__init__()
        self.map_control = xavier_linear(control_dim, kb_dim)
        self.conv = xavier_linear(kb_dim, 1)

    def attention(self, kb: Tensor, control: Tensor) -> Tensor:
        """Reference map for one step: [B, N]."""
        return normalized_conv(kb, self.map_control(control), self.conv)

    def attention_all_steps(
        self,
        kb_transposed: SharedOperand,
        kb_squared_transposed: SharedOperand,
        controls: Tensor,
    ) -> Tensor:
        """Fast maps for all T controls [B, T, E], one product each with kb and kb²: [B, T, N]."""
        queries = self.map_control(controls)  # [B, T, D]
        return normalized_conv_fast(kb_transposed, kb_squared_transposed, queries, self.conv)

    def forward(self, state: StackState, step: StepInputs) -> StackState:
        return push_map(state, step.find_map, step.guard)


class Transform(nn.Module):
    """Moves attention by a relation: "left of the red sphere" turns the sphere map into a map
    of everything to its left.

    a = conv1x1(n(kb ⊙ W_t c_t ⊙ x(a_top))), written over the top of the stack (pop 1, push 1;
    paper Table 1, Transform).
    """

    pops, pushes = 1, 1

    def __init__(self, control_dim: int, kb_dim: int) -> None:
        super().__init__()
        self.map_control = xavier_linear(control_dim, kb_dim)
        self.conv = xavier_linear(kb_dim, 1)

    def forward(self, state: StackState, step: StepInputs) -> StackState:
        if step.kb_transposed is None or step.pooled is None:
            top = st.read(state.stack, state.pointer)  # [B, N]
            query = self.map_control(step.control) * pooled_features(step.kb, top)  # [B, D]
            value = normalized_conv(step.kb, query, self.conv)
        else:
            query = self.map_control(step.control) * step.pooled[:, 0]  # [B, D]
            value = normalized_conv_fast(
                step.kb_transposed, step.kb_squared_transposed, query.unsqueeze(1), self.conv
            ).squeeze(1)
        stack = st.write(state.stack, state.pointer, value)
        return StackState(stack, state.pointer, torch.zeros_like(state.memory))


class Filter(nn.Module):
    """Narrows the top map by words: "the *red* sphere" after Find[sphere] keeps red ones.

    Find with Find's own weights (no parameters here), then And: the top becomes
    min(a_top, a_find) (paper Table 1, Filter).
    """

    pops, pushes = 1, 1

    def forward(self, state: StackState, step: StepInputs) -> StackState:
        found = push_map(state, step.find_map, step.guard)
        return pop_two_push_one(found, torch.minimum, step.guard)


class And(nn.Module):
    """Intersection: "the cube that is left of X *and* behind Y" → min of the two top maps.

    Pops two, pushes elementwise min(a1, a2) (paper Table 1, And).
    """

    pops, pushes = 2, 1

    def forward(self, state: StackState, step: StepInputs) -> StackState:
        return pop_two_push_one(state, torch.minimum, step.guard)


class Or(nn.Module):
    """Union: "how many things are cubes *or* spheres?" → max of the two top maps.

    Pops two, pushes elementwise max(a1, a2) (paper Table 1, Or).
    """

    pops, pushes = 2, 1

    def forward(self, state: StackState, step: StepInputs) -> StackState:
        return pop_two_push_one(state, torch.maximum, step.guard)


class Scene(nn.Module):
    """Attends to every object: "How many things are there?" → Scene, DescribeOne.

    a = conv1x1(n(kb)), pushed; no text input (paper Table 1, Scene).
    """

    pops, pushes = 0, 1

    def __init__(self, kb_dim: int) -> None:
        super().__init__()
        self.conv = xavier_linear(kb_dim, 1)

    def attention(self, kb: Tensor) -> Tensor:
        """Reference map: [B, N]."""
        return self.conv(l2_normalize(kb)).squeeze(2)

    def attention_fast(self, kb_transposed: Tensor, kb_squared_transposed: Tensor) -> Tensor:
        """(w · kb) / ||kb|| + b without materialising n(kb): [B, N]."""
        numerator = torch.matmul(self.conv.weight, kb_transposed).squeeze(1)  # [B, N]
        norm = torch.rsqrt(kb_squared_transposed.sum(dim=1).clamp_min(NORM_EPS_SQUARED))
        return numerator * norm + self.conv.bias

    def forward(self, state: StackState, step: StepInputs) -> StackState:
        return push_map(state, step.scene_map, step.guard)


class DescribeOne(nn.Module):
    """Answers about one map: "What color is the large cube?" reads the cube map.

    mem = Linear([c_t ; mem_prev ; n(W_d c_t ⊙ x(a_top))]); stack and pointer unchanged
    (official KEEP_STACK; paper Table 1, Answer).
    """

    pops, pushes = 1, 1  # validity: needs one map on the stack (official MODULE_INPUT_NUM)

    def __init__(self, control_dim: int, kb_dim: int, memory_dim: int) -> None:
        super().__init__()
        self.map_control = xavier_linear(control_dim, kb_dim)
        self.update = xavier_linear(control_dim + memory_dim + kb_dim, memory_dim)

    def forward(self, state: StackState, step: StepInputs) -> StackState:
        if step.pooled is None:
            pooled = pooled_features(step.kb, st.read(state.stack, state.pointer))
        else:
            pooled = step.pooled[:, 0]  # [B, D]
        described = l2_normalize(self.map_control(step.control) * pooled)
        memory = self.update(torch.cat([step.control, state.memory, described], dim=1))
        return StackState(state.stack, state.pointer, memory)


class DescribeTwo(nn.Module):
    """Compares two maps: "Are there more cubes than spheres?" reads the top two maps.

    mem = Linear([c_t ; mem_prev ; n(W_d2 c_t ⊙ x(a_1) ⊙ x(a_2))]); stack and pointer unchanged
    (official KEEP_STACK; paper Table 1, Compare).
    """

    pops, pushes = 2, 1  # validity: needs two maps on the stack (official MODULE_INPUT_NUM)

    def __init__(self, control_dim: int, kb_dim: int, memory_dim: int) -> None:
        super().__init__()
        self.map_control = xavier_linear(control_dim, kb_dim)
        self.update = xavier_linear(control_dim + memory_dim + kb_dim, memory_dim)

    def forward(self, state: StackState, step: StepInputs) -> StackState:
        if step.pooled is None:
            top = st.read(state.stack, state.pointer)
            below = st.read(state.stack, st.pop(state.pointer, step.guard))
            pooled = pooled_features(step.kb, below) * pooled_features(step.kb, top)
        else:
            pooled = step.pooled[:, 1] * step.pooled[:, 0]  # [B, D]
        described = l2_normalize(self.map_control(step.control) * pooled)
        memory = self.update(torch.cat([step.control, state.memory, described], dim=1))
        return StackState(state.stack, state.pointer, memory)


def build_modules(
    module_names: tuple[str, ...], control_dim: int, kb_dim: int, memory_dim: int
) -> nn.ModuleDict:
    """nn.ModuleDict of the modules in `module_names` order."""
    makers = {
        "NoOp": NoOp,
        "Find": lambda: Find(control_dim, kb_dim),
        "Transform": lambda: Transform(control_dim, kb_dim),
        "Filter": Filter,
        "And": And,
        "Or": Or,
        "Scene": lambda: Scene(kb_dim),
        "DescribeOne": lambda: DescribeOne(control_dim, kb_dim, memory_dim),
        "DescribeTwo": lambda: DescribeTwo(control_dim, kb_dim, memory_dim),
    }
    return nn.ModuleDict({name: makers[name]() for name in module_names})


def validity_matrix(modules: nn.ModuleDict, stack_length: int) -> Tensor:
    """V [L, M]: 1 where a module's pops and pushes fit at that pointer position."""
    valid = torch.zeros(stack_length, len(modules))
    for index, module in enumerate(modules.values()):
        highest = stack_length - 1 + module.pops - module.pushes
        valid[module.pops : highest + 1, index] = 1.0
    return valid
