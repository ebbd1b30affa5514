"""Expert layouts from CLEVR programs: the worked examples of docs/model.md, every CLEVR function,
and every question family, each expected layout written by hand from the algorithm."""

import pytest

from pipeline.clevr.functions import FUNCTION_ARITY
from snmn.layout import (
    FUNCTION_MODULES,
    MODULE_NAMES,
    NOOP,
    LayoutError,
    expert_layout,
    pad_layout,
    program_to_layout,
)


def program(*nodes):
    """("filter_shape", 0) → ("filter_shape", (0,)); inputs given as ints or tuples."""
    out = []
    for function, *inputs in nodes:
        out.append((function, tuple(inputs)))
    return out


# -- the worked examples of docs/model.md ---------------------------------------------------------

WHAT_COLOR_IS_THE_LARGE_CUBE = program(
    ("scene",), ("filter_size", 0), ("filter_shape", 1), ("unique", 2), ("query_color", 3)
)
MORE_CUBES_THAN_SPHERES = program(
    ("scene",),
    ("filter_shape", 0),
    ("count", 1),
    ("scene",),
    ("filter_shape", 3),
    ("count", 4),
    ("greater_than", 2, 5),
)
HOW_MANY_THINGS = program(("scene",), ("count", 0))


def test_worked_examples_of_the_spec():
    assert program_to_layout(WHAT_COLOR_IS_THE_LARGE_CUBE) == ["Find", "DescribeOne"]
    assert program_to_layout(MORE_CUBES_THAN_SPHERES) == ["Find", "Find", "DescribeTwo"]
    assert program_to_layout(HOW_MANY_THINGS) == ["Scene", "DescribeOne"]


def test_padding_to_t_with_noop():
    ids = expert_layout(MORE_CUBES_THAN_SPHERES, num_steps=9)
    assert ids == [1, 1, 8, 0, 0, 0, 0, 0, 0]
    assert [MODULE_NAMES[i] for i in ids[:3]] == ["Find", "Find", "DescribeTwo"]
    assert NOOP == MODULE_NAMES.index("NoOp") == 0


def test_module_order_is_the_official_one():
    assert MODULE_NAMES == (
        "NoOp", "Find", "Transform", "Filter", "And", "Or", "Scene", "DescribeOne", "DescribeTwo"
    )  # fmt: skip


# -- one example for every CLEVR function -------------------------------------------------------

FIND = ("scene",), ("filter_shape", 0)  # "cubes"
UNIQUE_CUBE = ("scene",), ("filter_shape", 0), ("unique", 1)  # "the cube"
FUNCTION_EXAMPLES = {
    "scene": (program(("scene",), ("count", 0)), ["Scene", "DescribeOne"]),
    "unique": (program(*UNIQUE_CUBE, ("query_color", 2)), ["Find", "DescribeOne"]),
    "relate": (
        program(*UNIQUE_CUBE, ("relate", 2), ("count", 3)),
        ["Find", "Transform", "DescribeOne"],
    ),
    "union": (
        program(*FIND, ("scene",), ("filter_color", 2), ("union", 1, 3), ("count", 4)),
        ["Find", "Find", "Or", "DescribeOne"],
    ),
    "intersect": (
        program(*FIND, ("scene",), ("filter_color", 2), ("intersect", 1, 3), ("count", 4)),
        ["Find", "Find", "And", "DescribeOne"],
    ),
    "count": (program(*FIND, ("count", 1)), ["Find", "DescribeOne"]),
    "exist": (program(*FIND, ("exist", 1)), ["Find", "DescribeOne"]),
}
for _a in ("color", "shape", "size", "material"):
    FUNCTION_EXAMPLES[f"filter_{_a}"] = (
        program(("scene",), (f"filter_{_a}", 0), ("exist", 1)),
        ["Find", "DescribeOne"],
    )
    FUNCTION_EXAMPLES[f"same_{_a}"] = (
        program(*UNIQUE_CUBE, (f"same_{_a}", 2), ("count", 3)),
        ["Find", "Transform", "DescribeOne"],
    )
    FUNCTION_EXAMPLES[f"query_{_a}"] = (
        program(*UNIQUE_CUBE, (f"query_{_a}", 2)),
        ["Find", "DescribeOne"],
    )
    FUNCTION_EXAMPLES[f"equal_{_a}"] = (
        program(
            *UNIQUE_CUBE,
            (f"query_{_a}", 2),
            ("scene",),
            ("filter_color", 4),
            ("unique", 5),
            (f"query_{_a}", 6),
            (f"equal_{_a}", 3, 7),
        ),
        ["Find", "Find", "DescribeTwo"],
    )
for _f in ("equal_integer", "less_than", "greater_than"):
    FUNCTION_EXAMPLES[_f] = (
        program(*FIND, ("count", 1), ("scene",), ("filter_color", 3), ("count", 4), (_f, 2, 5)),
        ["Find", "Find", "DescribeTwo"],
    )


def test_every_clevr_function_has_an_example_and_a_module():
    assert set(FUNCTION_EXAMPLES) == set(FUNCTION_ARITY) == set(FUNCTION_MODULES)


@pytest.mark.parametrize("function", sorted(FUNCTION_EXAMPLES))
def test_every_clevr_function(function):
    nodes, expected = FUNCTION_EXAMPLES[function]
    assert any(f == function for f, _ in nodes)
    assert program_to_layout(nodes) == expected


# -- question families, by hand ------------------------------------------------------------------

RED_CUBE = ("scene",), ("filter_color", 0), ("filter_shape", 1), ("unique", 2)  # node 3
FAMILIES = {
    # zero hop
    "How many large cubes are there?": (
        program(("scene",), ("filter_size", 0), ("filter_shape", 1), ("count", 2)),
        ["Find", "DescribeOne"],
    ),
    "Are there any red things?": (
        program(("scene",), ("filter_color", 0), ("exist", 1)),
        ["Find", "DescribeOne"],
    ),
    "What material is the red cube?": (
        program(*RED_CUBE, ("query_material", 3)),
        ["Find", "DescribeOne"],
    ),
    # one hop: Scene Filter Filter . Transform Filter . DescribeOne
    "What shape is the large thing left of the red cube?": (
        program(*RED_CUBE, ("relate", 3), ("filter_size", 4), ("unique", 5), ("query_shape", 6)),
        ["Find", "Transform", "Filter", "DescribeOne"],
    ),
    "How many things are left of the red cube?": (
        program(*RED_CUBE, ("relate", 3), ("count", 4)),
        ["Find", "Transform", "DescribeOne"],
    ),
    # a second Filter after a Transform's Filter goes, the first stays
    "Are there large metal things behind the red cube?": (
        program(*RED_CUBE, ("relate", 3), ("filter_size", 4), ("filter_material", 5), ("exist", 6)),
        ["Find", "Transform", "Filter", "DescribeOne"],
    ),
    # two hop
    "How many spheres are behind the cylinder that is left of the red cube?": (
        program(
            *RED_CUBE,
            ("relate", 3),
            ("filter_shape", 4),
            ("unique", 5),
            ("relate", 6),
            ("filter_shape", 7),
            ("count", 8),
        ),
        ["Find", "Transform", "Filter", "Transform", "Filter", "DescribeOne"],
    ),
    # same_*
    "How many other things have the same shape as the red cube?": (
        program(*RED_CUBE, ("same_shape", 3), ("count", 4)),
        ["Find", "Transform", "DescribeOne"],
    ),
    "Is there another sphere of the same color as the red cube?": (
        program(*RED_CUBE, ("same_color", 3), ("filter_shape", 4), ("exist", 5)),
        ["Find", "Transform", "Filter", "DescribeOne"],
    ),
    # compare integer; counting all things keeps a bare Scene
    "Is the number of red things the same as the number of large cylinders?": (
        program(
            ("scene",),
            ("filter_color", 0),
            ("count", 1),
            ("scene",),
            ("filter_size", 3),
            ("filter_shape", 4),
            ("count", 5),
            ("equal_integer", 2, 6),
        ),
        ["Find", "Find", "DescribeTwo"],
    ),
    "Are there fewer metal spheres than things?": (
        program(
            ("scene",),
            ("filter_material", 0),
            ("filter_shape", 1),
            ("count", 2),
            ("scene",),
            ("count", 4),
            ("less_than", 3, 5),
        ),
        ["Find", "Scene", "DescribeTwo"],
    ),
    # compare attribute
    "Is the large cube the same color as the sphere?": (
        program(
            ("scene",),
            ("filter_size", 0),
            ("filter_shape", 1),
            ("unique", 2),
            ("query_color", 3),
            ("scene",),
            ("filter_shape", 5),
            ("unique", 6),
            ("query_color", 7),
            ("equal_color", 4, 8),
        ),
        ["Find", "Find", "DescribeTwo"],
    ),
    "Does the thing left of the cube have the same size as the sphere?": (
        program(
            ("scene",),
            ("filter_shape", 0),
            ("unique", 1),
            ("relate", 2),
            ("unique", 3),
            ("query_size", 4),
            ("scene",),
            ("filter_shape", 6),
            ("unique", 7),
            ("query_size", 8),
            ("equal_size", 5, 9),
        ),
        ["Find", "Transform", "Find", "DescribeTwo"],
    ),
    # and / or
    "How many things are both left of the cube and in front of the sphere?": (
        program(
            ("scene",),
            ("filter_shape", 0),
            ("unique", 1),
            ("relate", 2),
            ("scene",),
            ("filter_shape", 4),
            ("unique", 5),
            ("relate", 6),
            ("intersect", 3, 7),
            ("count", 8),
        ),
        ["Find", "Transform", "Find", "Transform", "And", "DescribeOne"],
    ),
    "How many things are red cubes or large spheres?": (
        program(
            ("scene",),
            ("filter_color", 0),
            ("filter_shape", 1),
            ("scene",),
            ("filter_size", 3),
            ("filter_shape", 4),
            ("union", 2, 5),
            ("count", 6),
        ),
        ["Find", "Find", "Or", "DescribeOne"],
    ),
}
REF_FAMILIES = {
    "the large red cube": (
        program(("scene",), ("filter_size", 0), ("filter_color", 1), ("filter_shape", 2)),
        ["Find"],
    ),
    "the sphere left of the red cube": (
        program(*RED_CUBE, ("relate", 3), ("filter_shape", 4), ("unique", 5)),
        ["Find", "Transform", "Filter"],
    ),
    "the sphere of the same color as the red cube": (
        program(*RED_CUBE, ("same_color", 3), ("filter_shape", 4)),
        ["Find", "Transform", "Filter"],
    ),
    "the thing left of the cube and in front of the sphere": (
        program(
            ("scene",),
            ("filter_shape", 0),
            ("unique", 1),
            ("relate", 2),
            ("scene",),
            ("filter_shape", 4),
            ("unique", 5),
            ("relate", 6),
            ("intersect", 3, 7),
        ),
        ["Find", "Transform", "Find", "Transform", "And"],
    ),
    "the red cubes or the large spheres": (
        program(
            ("scene",),
            ("filter_color", 0),
            ("filter_shape", 1),
            ("scene",),
            ("filter_size", 3),
            ("filter_shape", 4),
            ("union", 2, 5),
        ),
        ["Find", "Find", "Or"],
    ),
}

# stack use of each module: (maps it needs on the stack, change of the stack depth)
STACK_USE = {
    "Find": (0, 1),
    "Scene": (0, 1),
    "Transform": (1, 0),
    "Filter": (1, 0),
    "And": (2, -1),
    "Or": (2, -1),
    "DescribeOne": (1, 0),
    "DescribeTwo": (2, 0),
}


def final_stack_depth(layout):
    """Run the layout on a stack of depths; every module must find the maps it reads."""
    depth = 0
    for module in layout:
        needs, change = STACK_USE[module]
        assert depth >= needs, f"{module} needs {needs} maps, the stack has {depth}"
        depth += change
    return depth


@pytest.mark.parametrize("question", sorted(FAMILIES))
def test_question_families(question):
    nodes, expected = FAMILIES[question]
    layout = program_to_layout(nodes)
    assert layout == expected
    assert layout[-1] in ("DescribeOne", "DescribeTwo")
    assert final_stack_depth(layout) >= 1


@pytest.mark.parametrize("expression", sorted(REF_FAMILIES))
def test_ref_families_end_in_a_map_and_never_describe(expression):
    nodes, expected = REF_FAMILIES[expression]
    layout = program_to_layout(nodes)
    assert layout == expected
    assert not {"DescribeOne", "DescribeTwo"} & set(layout)
    assert final_stack_depth(layout) == 1


def test_an_orphan_scene_is_not_the_root():
    # some CLEVR programs carry a scene node nobody reads
    nodes = program(("scene",), ("scene",), ("filter_color", 1), ("exist", 2))
    assert program_to_layout(nodes) == ["Find", "DescribeOne"]


def test_an_exist_input_of_a_comparison_is_kept():
    nodes = program(*FIND, ("exist", 1), ("scene",), ("filter_color", 3), ("exist", 4))
    nodes += program(("equal_integer", 2, 5))
    assert program_to_layout(nodes) == ["Find", "DescribeOne", "Find", "DescribeOne", "DescribeTwo"]


def test_a_layout_longer_than_t_is_an_error():
    two_hop = [("scene",), ("filter_shape", 0), ("unique", 1), ("relate", 2), ("filter_shape", 3)]
    two_hop += [("unique", 4), ("relate", 5), ("filter_shape", 6), ("unique", 7), ("query_size", 8)]
    other = [(f, *(i + 10 for i in inputs)) for f, *inputs in two_hop]
    nodes = program(*two_hop, *other, ("equal_size", 9, 19))
    layout = program_to_layout(nodes)
    assert len(layout) == 11  # (Find Transform Filter Transform Filter) × 2, DescribeTwo
    with pytest.raises(LayoutError, match="11 modules, more than T=9"):
        expert_layout(nodes, num_steps=9)
    assert len(expert_layout(nodes, num_steps=11)) == 11
    assert pad_layout(["Find"], 2) == [1, NOOP]


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([], "empty program"),
        ([("scene", ()), ("paint", (0,))], "unknown function 'paint'"),
        ([("scene", ()), ("count", (5,))], "input 5 out of range"),
        ([("filter_color", (1,)), ("filter_shape", (0,))], "0 candidate roots"),
        ([("scene", ()), ("count", (0,)), ("exist", (0,))], "2 candidate roots"),
    ],
)
def test_programs_without_a_layout(nodes, message):
    with pytest.raises(LayoutError, match=message):
        program_to_layout(nodes)


def test_a_cycle_below_the_root_is_caught():
    nodes = [("filter_color", (2,)), ("filter_shape", (0,)), ("filter_size", (1,))]
    nodes.append(("exist", (2,)))
    with pytest.raises(LayoutError, match="cyclic"):
        program_to_layout(nodes)
