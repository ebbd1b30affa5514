"""The symbolic executor on a hand-made scene: every CLEVR function, and its errors."""

from __future__ import annotations

import pytest

from pipeline.clevr.executor import ExecutionError, execute, run
from pipeline.clevr.readers import ProgramNode, Scene, SceneObject


def thing(shape: str, color: str, material: str, size: str) -> SceneObject:
    return SceneObject(shape, color, material, size, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 0.0, None)


# 0 large red metal cube, 1 small blue rubber sphere, 2 large blue rubber cylinder,
# 3 small red rubber cube. Layout (left → right): 1, 0, 3; 2 is behind everything.
SCENE = Scene(
    index=0,
    split="train",
    image_index=0,
    image_filename="CLEVR_train_000000.png",
    objects=(
        thing("cube", "red", "metal", "large"),
        thing("sphere", "blue", "rubber", "small"),
        thing("cylinder", "blue", "rubber", "large"),
        thing("cube", "red", "rubber", "small"),
    ),
    relationships={
        "left": ((1,), (), (0, 1), (0, 1)),
        "right": ((3,), (0, 3), (3,), ()),
        "behind": ((2,), (2,), (), (2,)),
        "front": ((1, 3), (3,), (0, 1, 3), ()),
    },
    directions={},
    masks=None,
)


def node(function: str, inputs: tuple[int, ...] = (), *values: str) -> ProgramNode:
    return ProgramNode(function, inputs, values)


def find(*filters: tuple[str, str]) -> list[ProgramNode]:
    """scene → filter_a[v] → ... as the start of a program."""
    nodes = [node("scene")]
    for attribute, value in filters:
        nodes.append(node(f"filter_{attribute}", (len(nodes) - 1,), value))
    return nodes


def test_scene_and_filters_return_object_sets():
    assert execute([node("scene")], SCENE) == frozenset({0, 1, 2, 3})
    assert execute(find(("color", "red")), SCENE) == {0, 3}
    assert execute(find(("shape", "cube")), SCENE) == {0, 3}
    assert execute(find(("size", "large")), SCENE) == {0, 2}
    assert execute(find(("material", "rubber")), SCENE) == {1, 2, 3}
    assert execute(find(("color", "blue"), ("size", "small")), SCENE) == {1}
    assert execute(find(("color", "green")), SCENE) == frozenset()


def test_count_and_exist_give_official_strings():
    program = find(("color", "red"))
    assert execute([*program, node("count", (len(program) - 1,))], SCENE) == "2"
    assert execute([*program, node("exist", (len(program) - 1,))], SCENE) == "yes"
    empty = find(("color", "cyan"))
    assert execute([*empty, node("count", (1,))], SCENE) == "0"
    assert execute([*empty, node("exist", (1,))], SCENE) == "no"


def test_unique_needs_exactly_one_object():
    one = find(("shape", "sphere"))
    assert run([*one, node("unique", (1,))], SCENE)[-1] == 1
    with pytest.raises(ExecutionError, match="exactly one"):
        execute([*find(("shape", "cube")), node("unique", (1,)), node("query_color", (2,))], SCENE)
    with pytest.raises(ExecutionError, match="exactly one"):
        execute([*find(("color", "green")), node("unique", (1,)), node("query_color", (2,))], SCENE)


@pytest.mark.parametrize(
    ("relation", "expected"),
    [("left", {1}), ("right", {3}), ("behind", {2}), ("front", {1, 3})],
)
def test_relate_reads_the_relationships_of_the_unique_object(relation, expected):
    program = [*find(("material", "metal")), node("unique", (1,)), node("relate", (2,), relation)]
    assert execute(program, SCENE) == expected


@pytest.mark.parametrize(
    ("attribute", "anchor_filter", "expected"),
    [
        ("color", ("material", "metal"), {3}),  # red like the metal cube, not the cube itself
        ("shape", ("material", "metal"), {3}),
        ("size", ("shape", "sphere"), {3}),
        ("material", ("shape", "sphere"), {2, 3}),
    ],
)
def test_same_excludes_the_object_itself(attribute, anchor_filter, expected):
    program = [*find(anchor_filter), node("unique", (1,)), node(f"same_{attribute}", (2,))]
    assert execute(program, SCENE) == expected


def test_union_and_intersect():
    red = find(("color", "red"))  # nodes 0, 1
    large = [node("scene"), node("filter_size", (2,), "large")]  # nodes 2, 3
    assert execute([*red, *large, node("union", (1, 3))], SCENE) == {0, 2, 3}
    assert execute([*red, *large, node("intersect", (1, 3))], SCENE) == {0}


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [("color", "blue"), ("shape", "sphere"), ("size", "small"), ("material", "rubber")],
)
def test_query_returns_the_attribute_of_the_unique_object(attribute, expected):
    program = [*find(("shape", "sphere")), node("unique", (1,)), node(f"query_{attribute}", (2,))]
    assert execute(program, SCENE) == expected


def compare(attribute: str, first: tuple[str, str], second: tuple[str, str]) -> list[ProgramNode]:
    """Official form: equal_X(query_X(unique(A)), query_X(unique(B)))."""
    return [
        *find(first),
        node("unique", (1,)),
        node(f"query_{attribute}", (2,)),
        node("scene"),
        node(f"filter_{second[0]}", (4,), second[1]),
        node("unique", (5,)),
        node(f"query_{attribute}", (6,)),
        node(f"equal_{attribute}", (3, 7)),
    ]


@pytest.mark.parametrize(
    ("attribute", "first", "second", "expected"),
    [
        ("color", ("shape", "sphere"), ("shape", "cylinder"), "yes"),
        ("color", ("shape", "sphere"), ("material", "metal"), "no"),
        ("shape", ("material", "metal"), ("shape", "cylinder"), "no"),
        ("size", ("material", "metal"), ("shape", "cylinder"), "yes"),
        ("material", ("shape", "sphere"), ("shape", "cylinder"), "yes"),
        ("material", ("shape", "sphere"), ("material", "metal"), "no"),
    ],
)
def test_equal_attribute_compares_two_query_outputs(attribute, first, second, expected):
    assert execute(compare(attribute, first, second), SCENE) == expected


def test_equal_attribute_also_accepts_two_objects():
    program = [
        *find(("shape", "sphere")),
        node("unique", (1,)),
        node("scene"),
        node("filter_shape", (3,), "cylinder"),
        node("unique", (4,)),
        node("equal_color", (2, 5)),
    ]
    assert execute(program, SCENE) == "yes"


@pytest.mark.parametrize(
    ("function", "expected"),
    [("equal_integer", "no"), ("less_than", "no"), ("greater_than", "yes")],
)
def test_integer_comparisons_on_two_counts(function, expected):
    program = [
        *find(("material", "rubber")),  # 3 objects
        node("count", (1,)),
        node("scene"),
        node("filter_color", (3,), "red"),  # 2 objects
        node("count", (4,)),
        node(function, (2, 5)),
    ]
    assert execute(program, SCENE) == expected


def test_equal_integer_yes():
    program = [
        *find(("shape", "cube")),
        node("count", (1,)),
        node("scene"),
        node("filter_color", (3,), "blue"),
        node("count", (4,)),
        node("equal_integer", (2, 5)),
    ]
    assert execute(program, SCENE) == "yes"


def test_a_referring_expression_returns_its_object_set():
    program = [
        *find(("material", "metal")),
        node("unique", (1,)),
        node("relate", (2,), "right"),
        node("filter_shape", (3,), "cube"),
    ]
    assert execute(program, SCENE) == frozenset({3})


@pytest.mark.parametrize(
    ("program", "message"),
    [
        ([node("scene"), node("paint_it_black", (0,))], "unknown function"),
        ([node("count", (1,)), node("scene")], "not before it"),
        ([node("scene"), node("query_color", (0,))], "expected one object"),
        ([node("scene"), node("relate", (0,), "left")], "expected one object"),
        ([*find(("shape", "sphere")), node("unique", (1,)), node("count", (2,))], "expected a set"),
        ([node("scene"), node("unique", (0,)), node("relate", (1,), "above")], "exactly one"),
        ([node("scene"), node("count", (0,)), node("equal_color", (1, 1))], "attribute value"),
        ([node("scene"), node("exist", (0,)), node("less_than", (1, 1))], "expected a count"),
        ([node("scene"), node("count", (0, 0))], "node 1 \\(count\\): expected 1 inputs, got 2"),
        ([node("scene"), node("union", (0,))], "node 1 \\(union\\): expected 2 inputs, got 1"),
    ],
)
def test_misuse_is_an_execution_error_naming_the_node(program, message):
    with pytest.raises(ExecutionError, match=message):
        execute(program, SCENE)


def test_relate_with_an_unknown_relation_is_an_error():
    program = [*find(("shape", "sphere")), node("unique", (1,)), node("relate", (2,), "above")]
    with pytest.raises(ExecutionError, match="node 3 \\(relate\\)"):
        execute(program, SCENE)
