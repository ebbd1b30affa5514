"""The CLEVR function catalogue (pipeline/clevr/functions.py) is the one the rest agrees with.

snmn/layout.py keeps its own function → module table (snmn/ imports only torch and numpy), and
executor.py its implementations: a function added to one and not the others would be read but
not run, or run but have no expert layout. These tests make such a drift fail.
"""

from __future__ import annotations

from pipeline.clevr import executor
from pipeline.clevr.functions import FUNCTIONS, QUESTION_TYPES, VALUE_FUNCTIONS
from pipeline.clevr.world import ATTRIBUTES
from snmn.layout import FUNCTION_MODULES


def test_the_catalogue_and_the_layout_modules_name_the_same_functions():
    assert set(FUNCTIONS) == set(FUNCTION_MODULES)


def test_the_executor_implements_exactly_the_catalogue():
    assert set(executor._STEPS) == set(FUNCTIONS)


def test_a_question_ends_in_a_describe_module_and_each_one_has_a_type():
    describing = {f for f, module in FUNCTION_MODULES.items() if module and "Describe" in module}
    assert set(QUESTION_TYPES) == describing
    assert QUESTION_TYPES["query_color"] == "query_attribute"
    assert QUESTION_TYPES["greater_than"] == "compare_number"


def test_filters_and_relate_take_a_value_input_and_the_records_say_their_arity():
    assert VALUE_FUNCTIONS == {f"filter_{a}" for a in ATTRIBUTES} | {"relate"}
    assert [FUNCTIONS[f].arity for f in ("scene", "filter_color", "union", "equal_shape")] == [
        0,
        1,
        2,
        2,
    ]
