"""The symbolic executor: runs a CLEVR program on a scene graph and returns its answer.

"Is the cube the same color as the sphere?" is the program
scene → filter_shape[cube] → unique → query_color, scene → filter_shape[sphere] → unique →
query_color, equal_color(3, 7). Running it node by node on the scene gives "yes" or "no".
The generator asks it for every answer it writes, and the tests use it as the oracle. Sets of
objects are frozensets of object indices; a program whose last node is a set (a CLEVR-Ref
expression) returns that set. Any misuse (unique on two objects, a wrong input type or number of
inputs, a function not in the catalogue of functions.py) raises ExecutionError naming the node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.clevr.functions import FUNCTIONS
from pipeline.clevr.readers import ProgramNode, Scene
from pipeline.clevr.world import ATTRIBUTES

ObjectSet = frozenset[int]


class ObjectIndex(int):
    """One object (the output of unique), kept apart from a count of the same value."""


Value = ObjectSet | ObjectIndex | int | bool | str  # objects, one object, count, yes/no, attribute


class ExecutionError(ValueError):
    """A program that cannot run on a scene (the message names the node)."""


def execute(program: Sequence[ProgramNode], scene: Scene) -> str | ObjectSet:
    """Answer as the official string ("yes", "3", "red"), or the object set of a REF program."""
    outputs = run(program, scene)
    return answer_string(outputs[-1])


def run(program: Sequence[ProgramNode], scene: Scene) -> list[Value]:
    """Every node's output, evaluated by node index (the program must be topologically sorted)."""
    outputs: list[Value] = []
    for position, node in enumerate(program):
        if any(not 0 <= j < position for j in node.inputs):
            raise ExecutionError(
                f"node {position} ({node.function}): inputs {node.inputs} not before it"
            )
        function = FUNCTIONS.get(node.function)
        if function is None:
            raise ExecutionError(f"node {position}: unknown function {node.function!r}")
        if len(node.inputs) != function.arity:
            raise ExecutionError(
                f"node {position} ({node.function}): expected {function.arity} inputs, "
                f"got {len(node.inputs)}"
            )
        step = _STEPS[node.function]
        arguments = [outputs[j] for j in node.inputs]
        try:
            outputs.append(step(scene, arguments, node.value_inputs))
        except (ExecutionError, IndexError, KeyError, TypeError, AttributeError) as error:
            raise ExecutionError(f"node {position} ({node.function}): {error}") from None
    return outputs


def answer_string(value: Value) -> str | ObjectSet:
    """Python value → CLEVR answer string: True → "yes", 3 → "3"; sets stay sets."""
    if isinstance(value, frozenset):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, ObjectIndex):
        raise ExecutionError("a program cannot end in unique")
    return str(value)


# ---------------------------------------------------------------------------------------------
# The functions of the catalogue (functions.py). Each takes the scene, its input values and its
# value inputs.
# ---------------------------------------------------------------------------------------------


def _objects(value: Value) -> ObjectSet:
    if not isinstance(value, frozenset):
        raise ExecutionError(f"expected a set of objects, got {value!r}")
    return value


def _object(value: Value) -> int:
    if not isinstance(value, ObjectIndex):
        raise ExecutionError(f"expected one object (from unique), got {value!r}")
    return value


def _number(value: Value) -> int:
    if isinstance(value, (bool, ObjectIndex)) or not isinstance(value, int):
        raise ExecutionError(f"expected a count, got {value!r}")
    return value


def _text(value: Value) -> str:
    if not isinstance(value, str):
        raise ExecutionError(f"expected an attribute value, got {value!r}")
    return value


def _scene(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
    return frozenset(range(len(scene.objects)))


def _unique(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
    objects = _objects(args[0])
    if len(objects) != 1:
        raise ExecutionError(f"unique needs exactly one object, got {len(objects)}")
    return ObjectIndex(next(iter(objects)))


def _relate(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
    return frozenset(scene.relationships[values[0]][_object(args[0])])


def _union(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
    return _objects(args[0]) | _objects(args[1])


def _intersect(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
    return _objects(args[0]) & _objects(args[1])


def _count(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
    return len(_objects(args[0]))


def _exist(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
    return len(_objects(args[0])) > 0


def _equal_integer(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
    return _number(args[0]) == _number(args[1])


def _less_than(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
    return _number(args[0]) < _number(args[1])


def _greater_than(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
    return _number(args[0]) > _number(args[1])


Step = Callable[[Scene, list[Value], tuple[str, ...]], Value]


def _filter(attribute: str) -> Step:
    def step(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
        wanted = values[0]
        return frozenset(
            i for i in _objects(args[0]) if getattr(scene.objects[i], attribute) == wanted
        )

    return step


def _same(attribute: str) -> Step:
    def step(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
        anchor = _object(args[0])
        wanted = getattr(scene.objects[anchor], attribute)
        return frozenset(
            i
            for i, obj in enumerate(scene.objects)
            if i != anchor and getattr(obj, attribute) == wanted
        )

    return step


def _query(attribute: str) -> Step:
    def step(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
        return getattr(scene.objects[_object(args[0])], attribute)

    return step


def _equal(attribute: str) -> Step:
    """Official CLEVR compares two query_* outputs; two objects (from unique) are accepted too."""

    def value(scene: Scene, arg: Value) -> str:
        if isinstance(arg, ObjectIndex):
            return getattr(scene.objects[arg], attribute)
        return _text(arg)

    def step(scene: Scene, args: list[Value], values: tuple[str, ...]) -> Value:
        return value(scene, args[0]) == value(scene, args[1])

    return step


# The implementation of every function of the catalogue (functions.py), by name.
_STEPS: dict[str, Step] = {
    "scene": _scene,
    "unique": _unique,
    "relate": _relate,
    "union": _union,
    "intersect": _intersect,
    "count": _count,
    "exist": _exist,
    "equal_integer": _equal_integer,
    "less_than": _less_than,
    "greater_than": _greater_than,
    **{f"filter_{a}": _filter(a) for a in ATTRIBUTES},
    **{f"same_{a}": _same(a) for a in ATTRIBUTES},
    **{f"query_{a}": _query(a) for a in ATTRIBUTES},
    **{f"equal_{a}": _equal(a) for a in ATTRIBUTES},
}
