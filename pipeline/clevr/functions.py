"""The CLEVR function catalogue: every function a CLEVR v1.0 program may call, in one table.

"What color is the large cube?" comes with the program
scene → filter_size[large] → filter_shape[cube] → unique → query_color. Each function has one
record here: how many program inputs it reads (filter_size reads one node, equal_color two),
whether it takes a value input (filter_size[large], relate[left]) and, for a function that ends
a question, the question's type (query_color → query_attribute). readers.py checks every program
node against it, executor.py implements exactly these functions, and tokenization.py types each
question by its last one. snmn/layout.py maps the same names to modules in a table of its own
(snmn/ imports only torch and numpy); tests/unit/test_clevr_functions.py checks that both tables
name the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.clevr.world import ATTRIBUTES


@dataclass(frozen=True, slots=True)
class Function:
    """One CLEVR function, as the program format and the question types know it."""

    name: str
    arity: int  # program inputs it reads: scene 0, filter_color 1, equal_color 2
    takes_value: bool = False  # one value input: the attribute value or the relation
    question_type: str | None = None  # type of a question whose program ends here


FUNCTIONS: dict[str, Function] = {
    function.name: function
    for function in (
        Function("scene", 0),
        *(Function(f"filter_{a}", 1, takes_value=True) for a in ATTRIBUTES),
        Function("unique", 1),
        Function("relate", 1, takes_value=True),
        *(Function(f"same_{a}", 1) for a in ATTRIBUTES),
        Function("union", 2),
        Function("intersect", 2),
        Function("count", 1, question_type="count"),
        Function("exist", 1, question_type="exist"),
        *(Function(f"query_{a}", 1, question_type="query_attribute") for a in ATTRIBUTES),
        *(Function(f"equal_{a}", 2, question_type="compare_attribute") for a in ATTRIBUTES),
        Function("equal_integer", 2, question_type="compare_number"),
        Function("less_than", 2, question_type="compare_number"),
        Function("greater_than", 2, question_type="compare_number"),
    )
}
# Views of the table for the hot paths: the reader's node check and the per-question type.
FUNCTION_ARITY: dict[str, int] = {name: f.arity for name, f in FUNCTIONS.items()}
VALUE_FUNCTIONS = frozenset(name for name, f in FUNCTIONS.items() if f.takes_value)
QUESTION_TYPES: dict[str, str] = {
    name: f.question_type for name, f in FUNCTIONS.items() if f.question_type is not None
}
