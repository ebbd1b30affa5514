"""Module names of the layout controller and the expert layouts made from CLEVR programs.

"Are there more cubes than spheres?" comes with the program
scene → filter_shape[cube] → count, scene → filter_shape[sphere] → count, greater_than. The
controller is taught to run it as Find, Find, DescribeTwo, NoOp, ... (T steps): the counts are
pruned into the comparison, the program is read in post-order, functions become modules, each
Scene that a Filter reads becomes one Find, and a Filter straight after a Filter or a Find is
dropped (one Find already attends to "large cube"). This file does that conversion in pure Python
over (function, inputs) pairs, the algorithm of the official release (docs/model.md, "Expert layouts
from CLEVR programs").
"""

from __future__ import annotations

from collections.abc import Sequence

MODULE_NAMES: tuple[str, ...] = (
    "NoOp",
    "Find",
    "Transform",
    "Filter",
    "And",
    "Or",
    "Scene",
    "DescribeOne",
    "DescribeTwo",
)
MODULE_INDEX: dict[str, int] = {name: i for i, name in enumerate(MODULE_NAMES)}
NOOP = MODULE_INDEX["NoOp"]

_ATTRIBUTES = ("color", "shape", "size", "material")
# CLEVR function → module; None: the function has no module (`unique` only narrows a set).
FUNCTION_MODULES: dict[str, str | None] = {
    "scene": "Scene",
    **{f"filter_{a}": "Filter" for a in _ATTRIBUTES},
    "unique": None,
    "relate": "Transform",
    **{f"same_{a}": "Transform" for a in _ATTRIBUTES},
    "intersect": "And",
    "union": "Or",
    "count": "DescribeOne",
    "exist": "DescribeOne",
    **{f"query_{a}": "DescribeOne" for a in _ATTRIBUTES},
    **{f"equal_{a}": "DescribeTwo" for a in _ATTRIBUTES},
    "equal_integer": "DescribeTwo",
    "less_than": "DescribeTwo",
    "greater_than": "DescribeTwo",
}
COMPARISONS = frozenset(f for f, m in FUNCTION_MODULES.items() if m == "DescribeTwo")
# Inputs of a comparison that are pruned: the comparison reads their input instead.
PRUNED_INPUTS = frozenset(["count", *(f"query_{a}" for a in _ATTRIBUTES)])
# A longer post-order walk means a cycle or an exploding shared sub-program, never a question.
MAX_WALK = 1000


class LayoutError(ValueError):
    """A program that has no expert layout (bad structure, or longer than T steps)."""


def program_to_layout(program: Sequence[tuple[str, Sequence[int]]]) -> list[str]:
    """Module names (unpadded) of the expert layout of `program`, a list of (function, inputs).

    >>> program_to_layout([("scene", ()), ("filter_size", (0,)), ("filter_shape", (1,)),
    ...                    ("unique", (2,)), ("query_color", (3,))])
    ['Find', 'DescribeOne']
    """
    return [module for module, _ in layout_with_nodes(program)]


def layout_with_nodes(program: Sequence[tuple[str, Sequence[int]]]) -> list[tuple[str, int]]:
    """The expert layout, each module with the program node it stands for.

    A Find made of scene → filter_color → filter_shape names the last filter (the narrowest
    set); the node of a Describe module is its comparison or query node.

    >>> layout_with_nodes([("scene", ()), ("filter_size", (0,)), ("filter_shape", (1,)),
    ...                    ("unique", (2,)), ("query_color", (3,))])
    [('Find', 2), ('DescribeOne', 4)]
    """
    functions, inputs = pruned_program(program)
    steps: list[tuple[str, int]] = []
    for node in post_order(find_root(functions, inputs), inputs):
        function = functions[node]
        if function is None:
            raise LayoutError(f"program node {node}: pruned into a comparison but read elsewhere")
        module = FUNCTION_MODULES[function]
        if module is None:
            continue
        if module == "Filter" and steps:
            previous = steps[-1][0]
            if previous == "Scene":  # scene → filter: one Find
                steps[-1] = ("Find", node)
                continue
            if previous in ("Find", "Filter"):  # a further filter narrows the same step
                steps[-1] = (previous, node)
                continue
        steps.append((module, node))
    return steps


def pad_layout(layout: Sequence[str], num_steps: int) -> list[int]:
    """Module ids of `layout` padded with NoOp to `num_steps`; longer than that is a LayoutError."""
    if len(layout) > num_steps:
        raise LayoutError(f"expert layout has {len(layout)} modules, more than T={num_steps}")
    return [MODULE_INDEX[name] for name in layout] + [NOOP] * (num_steps - len(layout))


def expert_layout(program: Sequence[tuple[str, Sequence[int]]], num_steps: int) -> list[int]:
    """The padded module ids the controller is trained on for `program` (T = num_steps)."""
    return pad_layout(program_to_layout(program), num_steps)


def pruned_program(
    program: Sequence[tuple[str, Sequence[int]]],
) -> tuple[list[str | None], list[list[int]]]:
    """Functions and inputs with each count/query_* input of a comparison bypassed.

    A bypassed node gets the function None: it no longer exists for the root search.
    """
    if not program:
        raise LayoutError("empty program")
    size = len(program)
    functions: list[str | None] = []
    inputs: list[list[int]] = []
    for i, (function, node_inputs) in enumerate(program):
        if function not in FUNCTION_MODULES:
            raise LayoutError(f"program node {i}: unknown function {function!r}")
        for j in node_inputs:
            if not 0 <= j < size:
                raise LayoutError(f"program node {i}: input {j} out of range 0..{size - 1}")
        functions.append(function)
        inputs.append(list(node_inputs))
    for i, function in enumerate(functions):
        if function not in COMPARISONS:
            continue
        for k, j in enumerate(inputs[i]):
            if functions[j] in PRUNED_INPUTS:
                if len(inputs[j]) != 1:
                    raise LayoutError(f"program node {j}: {functions[j]} must have one input")
                inputs[i][k] = inputs[j][0]
                functions[j] = None
    return functions, inputs


def find_root(functions: list[str | None], inputs: list[list[int]]) -> int:
    """The node no other node reads; among several, those that are not `scene`."""
    read = set()
    for function, node_inputs in zip(functions, inputs, strict=True):
        if function is not None:
            read.update(node_inputs)
    roots = [i for i, f in enumerate(functions) if f is not None and i not in read]
    if len(roots) > 1:
        roots = [i for i in roots if functions[i] != "scene"]
    if len(roots) != 1:
        raise LayoutError(f"program has {len(roots)} candidate roots {roots}, expected one")
    return roots[0]


def post_order(root: int, inputs: list[list[int]]) -> list[int]:
    """Nodes in post-order from `root` (inputs in order, then the node); shared nodes repeat."""
    order: list[int] = []
    stack: list[tuple[int, int]] = [(root, 0)]  # (node, next input to visit)
    while stack:
        node, k = stack[-1]
        if k < len(inputs[node]):
            stack[-1] = (node, k + 1)
            stack.append((inputs[node][k], 0))
            if len(stack) > MAX_WALK:
                raise LayoutError("program is cyclic or too deep")
        else:
            stack.pop()
            order.append(node)
            if len(order) > MAX_WALK:
                raise LayoutError(f"program expands to more than {MAX_WALK} steps")
    return order
