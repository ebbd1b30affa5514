"""Question and referring-expression families: quality rules, coverage, and answer balancing."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pipeline.clevr.executor import execute, run
from pipeline.clevr.readers import ProgramNode
from pipeline.clevr.world import ATTRIBUTES, CLEVR_ANSWERS, Camera
from pipeline.minclevr.families import (
    FAMILIES,
    Candidate,
    Selector,
    answer_allowed,
    family_table,
    sample_candidates,
)
from pipeline.minclevr.phrases import everyone, matching
from pipeline.minclevr.scenes import sample_scene

SNMN_FUNCTIONS = {
    "count", "exist", "relate", "intersect", "union", "equal_integer", "less_than", "greater_than",
    *(f"{kind}_{a}" for kind in ("query", "same", "equal", "filter") for a in ATTRIBUTES),
}  # fmt: skip


@pytest.fixture(scope="module")
def sampled():
    """(scene, candidates) for 25 random scenes, VQA and REF."""
    result = []
    for seed in range(25):
        rng = random.Random(seed)
        scene = sample_scene(rng, "train", seed, (3, 6), 200, Camera()).scene
        result.append(
            (scene, sample_candidates(scene, rng, "vqa") + sample_candidates(scene, rng, "ref"))
        )
    return result


def candidates_of(sampled, task: str):
    for scene, candidates in sampled:
        for candidate in candidates:
            if FAMILIES[candidate.family].task == task:
                yield scene, candidate


def test_every_family_is_sampled_and_every_module_pattern_is_covered(sampled):
    seen = Counter(c.family for _, cs in sampled for c in cs)
    assert set(seen) == {f.index for f in FAMILIES}
    functions = {node.function for _, cs in sampled for c in cs for node in c.program}
    assert SNMN_FUNCTIONS <= functions
    table = family_table()
    assert [row["index"] for row in table] == list(range(len(FAMILIES)))
    assert {row["task"] for row in table} == {"vqa", "ref"}


def test_stored_answers_are_the_executor_answers(sampled):
    for scene, candidate in candidates_of(sampled, "vqa"):
        assert execute(candidate.program, scene) == candidate.answer
    for scene, candidate in candidates_of(sampled, "ref"):
        assert execute(candidate.program, scene) == {candidate.target}
        assert candidate.program[-1].function not in ("unique", "count", "exist")


def test_every_unique_sees_exactly_one_object(sampled):
    for scene, candidate in [*candidates_of(sampled, "vqa"), *candidates_of(sampled, "ref")]:
        outputs = run(candidate.program, scene)
        for node in candidate.program:
            if node.function == "unique":
                assert len(outputs[node.inputs[0]]) == 1


def test_count_and_exist_sometimes_see_nothing(sampled):
    answers = Counter(c.answer for _, c in candidates_of(sampled, "vqa"))
    assert answers["0"] > 0 and answers["no"] > 0 and answers["yes"] > 0


def filters_before(program: tuple[ProgramNode, ...], index: int) -> list[ProgramNode]:
    """The filter nodes in the chain that feeds node `index` (through unique)."""
    chain = []
    node = program[program[index].inputs[0]]
    while node.function in ("unique",) or node.function.startswith("filter_"):
        if node.function.startswith("filter_"):
            chain.append(node)
        node = program[node.inputs[0]]
    return chain


def test_no_question_gives_its_answer_away(sampled):
    for _, candidate in candidates_of(sampled, "vqa"):
        program = candidate.program
        for position, node in enumerate(program):
            kind, _, attribute = node.function.partition("_")
            if kind in ("query", "same"):
                named = {n.function for n in filters_before(program, position)}
                assert f"filter_{attribute}" not in named, candidate.text
            if kind == "same":  # nor filters the same attribute afterwards
                users = [n for n in program if position in n.inputs]
                assert all(n.function != f"filter_{attribute}" for n in users), candidate.text


def filters_after(program: tuple[ProgramNode, ...], index: int) -> tuple[tuple, int, list[str]]:
    """The filter chain that reads node `index`: (description, its last node, who reads that)."""
    description, end = [], index
    users = [i for i, n in enumerate(program) if end in n.inputs]
    while len(users) == 1 and program[users[0]].function.startswith("filter_"):
        end = users[0]
        description.append((program[end].function[len("filter_") :], program[end].value_inputs[0]))
        users = [i for i, n in enumerate(program) if end in n.inputs]
    return tuple(description), end, [program[i].function for i in users]


def test_relations_are_never_degenerate(sampled):
    """The filters after a relate pick a different set than among all objects but the anchor."""
    for scene, candidate in [*candidates_of(sampled, "vqa"), *candidates_of(sampled, "ref")]:
        program = candidate.program
        outputs = run(program, scene)
        for position, node in enumerate(program):
            if node.function != "relate":
                continue
            description, end, readers = filters_after(program, position)
            if readers == ["intersect"]:
                continue  # test_and_needs_both_relations
            without = matching(scene, everyone(scene) - {outputs[node.inputs[0]]}, description)
            assert outputs[end] != without, candidate.text


def test_and_needs_both_relations_and_or_both_descriptions(sampled):
    for scene, candidate in [*candidates_of(sampled, "vqa"), *candidates_of(sampled, "ref")]:
        program = candidate.program
        outputs = run(program, scene)
        for position, node in enumerate(program):
            if node.function == "intersect":
                description, end, _ = filters_after(program, position)
                for branch in node.inputs:
                    assert matching(scene, outputs[branch], description) != outputs[end], (
                        candidate.text
                    )
            if node.function == "union" and FAMILIES[candidate.family].task == "vqa":
                first, second = (outputs[i] for i in node.inputs)
                assert first - second and second - first, candidate.text


def test_texts_read_like_clevr(sampled):
    for _, candidate in candidates_of(sampled, "vqa"):
        assert candidate.text[0].isupper() and candidate.text.endswith("?")
        assert "  " not in candidate.text
    for _, candidate in candidates_of(sampled, "ref"):
        assert candidate.text.startswith("the ")


def test_scenes_of_ten_objects_ask_counts_up_to_ten_in_clevrs_answers():
    """CLEVR's largest scenes (generate.max_objects: 10): every answer is one of CLEVR's 28."""
    answers = Counter()
    for seed in range(4):
        rng = random.Random(seed)
        scene = sample_scene(rng, "train", seed, (10, 10), 200, Camera()).scene
        assert len(scene.objects) == 10
        for candidate in sample_candidates(scene, rng, "vqa"):
            assert execute(candidate.program, scene) == candidate.answer
            answers[candidate.answer] += 1
    assert set(answers) <= set(CLEVR_ANSWERS)
    assert answers["10"] > 0 and answers["9"] + answers["8"] + answers["7"] > 0


def test_balancing_rule():
    assert answer_allowed({}, "yes")
    assert answer_allowed({"yes": 10, "no": 10}, "yes")  # 11 <= 1.1 * 10 + 3
    assert not answer_allowed({"yes": 20, "no": 10}, "yes")  # 21 > 14
    assert answer_allowed({"yes": 20, "no": 10}, "no")
    assert not answer_allowed({"yes": 3}, "yes")  # no runner-up yet: slack only
    skewed = {"0": 40, "1": 40, "2": 5, "3": 5, "4": 5}
    assert not answer_allowed(skewed, "0")  # 41 > 5 * median(5) + 3
    assert answer_allowed(skewed, "3")


def test_selector_prefers_unused_families_and_enforces_the_rule():
    selector = Selector()
    program = (ProgramNode("scene", (), ()),)
    pool = [Candidate(family, f"q{family}", program, "yes", None) for family in range(3)]
    first = selector.pick_questions(pool, 2, random.Random(0))
    second = selector.pick_questions(pool, 1, random.Random(0))
    assert len(first) == 2 and len({c.family for c in first}) == 2
    assert second[0].family not in {c.family for c in first}  # the family not used yet
    for _ in range(10):
        selector.pick_questions(pool, 3, random.Random(0))
    assert all(count <= 3 for count in selector.family_totals.values())  # "yes" only: slack
