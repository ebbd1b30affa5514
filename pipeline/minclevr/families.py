"""The family table, per-image candidate sampling, and per-family answer balancing.

Every written question carries `question_family_index` into FAMILIES, e.g. family 8 is
one-hop query_color ("What color is the <Z2> <M2> <S2> that is <R> the <Z> <C> <M> <S>?").
Workers sample a few candidates per family for each image; one process then walks the images
in order and keeps, family by family (least used first), a candidate whose answer passes
`answer_allowed`: in its family, no answer may get more than 1.1 x the runner-up answer's count
or 5 x the median answer's count (plus a small start-up slack). Because that process sees the
images in index order, the kept questions do not depend on the number of workers.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.clevr.executor import execute
from pipeline.clevr.readers import ProgramNode, Scene
from pipeline.clevr.world import ATTRIBUTES
from pipeline.minclevr import questions, refexps
from pipeline.minclevr.phrases import Sampler

BALANCE_RATIO_SECOND = 1.1  # an answer may lead the runner-up answer by at most 10 % ...
BALANCE_RATIO_MEDIAN = 5.0  # ... and be at most 5 x the median answer count ...
BALANCE_SLACK = 3  # ... plus this many questions, so that a family can start at all

OBJECT = "<Z> <C> <M> <S>"
OTHER = "<Z2> <C2> <M2> <S2>"
THIRD = "<Z3> <C3> <M3> <S3>"


@dataclass(frozen=True)
class Family:
    index: int
    name: str
    task: str  # "vqa" (answer) or "ref" (one target object)
    template: str
    sample: Sampler


@dataclass(frozen=True)
class Candidate:
    """A question (with its answer) or an expression (with its target) for one image."""

    family: int
    text: str
    program: tuple[ProgramNode, ...]
    answer: str | None
    target: int | None


def _rows() -> list[tuple[str, str, str, Sampler]]:
    query = {a: f"What {a} is the" for a in ATTRIBUTES}
    rows = [
        ("zero_hop_count", "vqa", f"How many {OBJECT}s are there?", questions.zero_hop("count")),
        ("zero_hop_exist", "vqa", f"Are there any {OBJECT}s?", questions.zero_hop("exist")),
        *[
            (f"zero_hop_query_{a}", "vqa", f"{query[a]} {OBJECT}?", questions.zero_hop_query(a))
            for a in ATTRIBUTES
        ],
        (
            "one_hop_count",
            "vqa",
            f"How many {OTHER}s are <R> the {OBJECT}?",
            questions.one_hop("count"),
        ),
        (
            "one_hop_exist",
            "vqa",
            f"Are there any {OTHER}s <R> the {OBJECT}?",
            questions.one_hop("exist"),
        ),
        *[
            (
                f"one_hop_query_{a}",
                "vqa",
                f"{query[a]} {OTHER} that is <R> the {OBJECT}?",
                questions.one_hop_query(a),
            )
            for a in ATTRIBUTES
        ],
        (
            "two_hop_count",
            "vqa",
            f"How many {THIRD}s are <R2> the {OTHER} that is <R> the {OBJECT}?",
            questions.two_hop("count"),
        ),
        (
            "two_hop_exist",
            "vqa",
            f"Are there any {THIRD}s <R2> the {OTHER} that is <R> the {OBJECT}?",
            questions.two_hop("exist"),
        ),
        *[
            (
                f"two_hop_query_{a}",
                "vqa",
                f"{query[a]} {THIRD} that is <R2> the {OTHER} that is <R> the {OBJECT}?",
                questions.two_hop_query(a),
            )
            for a in ATTRIBUTES
        ],
        (
            "same_count",
            "vqa",
            f"How many other {OTHER}s have the same <A> as the {OBJECT}?",
            questions.same("count"),
        ),
        (
            "same_exist",
            "vqa",
            f"Are there any other {OTHER}s that have the same <A> as the {OBJECT}?",
            questions.same("exist"),
        ),
        *[
            (
                f"same_query_{a}",
                "vqa",
                f"{query[a]} {OTHER} that is the same <A> as the {OBJECT}?",
                questions.same_query(a),
            )
            for a in ATTRIBUTES
        ],
        (
            "compare_equal_integer",
            "vqa",
            f"Are there an equal number of {OBJECT}s and {OTHER}s?",
            questions.compare_integer("equal_integer"),
        ),
        (
            "compare_less_than",
            "vqa",
            f"Are there fewer {OBJECT}s than {OTHER}s?",
            questions.compare_integer("less_than"),
        ),
        (
            "compare_greater_than",
            "vqa",
            f"Are there more {OBJECT}s than {OTHER}s?",
            questions.compare_integer("greater_than"),
        ),
        *[
            (
                f"compare_{a}",
                "vqa",
                f"Is the {OBJECT} the same {a} as the {OTHER}?",
                questions.compare_attribute(a),
            )
            for a in ATTRIBUTES
        ],
        (
            "and_count",
            "vqa",
            f"How many {THIRD}s are both <R> the {OBJECT} and <R2> the {OTHER}?",
            questions.both("count"),
        ),
        (
            "and_exist",
            "vqa",
            f"Are there any {THIRD}s that are <R> the {OBJECT} and <R2> the {OTHER}?",
            questions.both("exist"),
        ),
        ("or_count", "vqa", f"How many things are either {OBJECT}s or {OTHER}s?", questions.either),
        ("ref_zero_hop", "ref", f"the {OBJECT}", refexps.zero_hop),
        ("ref_one_hop", "ref", f"the {OTHER} that is <R> the {OBJECT}", refexps.one_hop),
        (
            "ref_same_relate",
            "ref",
            f"the {OTHER} that is the same <A> as the {OBJECT}",
            refexps.same_relate,
        ),
        (
            "ref_and",
            "ref",
            f"the {THIRD} that is <R> the {OBJECT} and <R2> the {OTHER}",
            refexps.both,
        ),
        ("ref_or", "ref", f"the thing that is either a {OBJECT} or a {OTHER}", refexps.either),
    ]
    return rows


FAMILIES: tuple[Family, ...] = tuple(Family(i, *row) for i, row in enumerate(_rows()))


def family_table() -> list[dict[str, Any]]:
    """The families as plain data, for the `info` block of every questions file."""
    return [
        {"index": f.index, "name": f.name, "task": f.task, "template": f.template} for f in FAMILIES
    ]


def sample_candidates(
    scene: Scene, rng: random.Random, task: str, per_family: int = 3, tries: int = 6
) -> list[Candidate]:
    """Up to `per_family` distinct candidates of every family of `task` for one scene."""
    found = []
    for family in FAMILIES:
        if family.task != task:
            continue
        texts: set[str] = set()
        for _ in range(tries):
            sampled = family.sample(scene, rng)
            if sampled is None or sampled[0] in texts:
                continue
            text, program = sampled
            result = execute(program, scene)
            if task == "ref":
                if not isinstance(result, frozenset) or len(result) != 1:
                    raise AssertionError(f"family {family.name}: {text!r} refers to {result}")
                found.append(Candidate(family.index, text, program, None, next(iter(result))))
            else:
                found.append(Candidate(family.index, text, program, str(result), None))
            texts.add(text)
            if len(texts) == per_family:
                break
    return found


def answer_allowed(counts: Mapping[str, int], answer: str) -> bool:
    """May one more question of a family answer `answer`, given that family's answer counts?"""
    new = counts.get(answer, 0) + 1
    others = [count for key, count in counts.items() if key != answer and count > 0]
    runner_up = max(others, default=0)
    median = statistics.median([new, *others])
    return (
        new <= BALANCE_RATIO_SECOND * runner_up + BALANCE_SLACK
        and new <= BALANCE_RATIO_MEDIAN * median + BALANCE_SLACK
    )


class Selector:
    """Picks each image's questions and expressions for one split, balancing as it goes."""

    def __init__(self) -> None:
        self.answers: dict[int, Counter[str]] = defaultdict(Counter)  # family → answer → count
        self.family_totals: Counter[int] = Counter()

    def _families(
        self, candidates: Sequence[Candidate], rng: random.Random
    ) -> list[list[Candidate]]:
        """Candidates grouped by family, least used family first (ties in random order)."""
        groups: dict[int, list[Candidate]] = defaultdict(list)
        for candidate in candidates:
            groups[candidate.family].append(candidate)
        order = sorted(groups, key=lambda f: (self.family_totals[f], rng.random()))
        return [groups[f] for f in order]

    def pick_questions(
        self, candidates: Sequence[Candidate], wanted: int, rng: random.Random
    ) -> list[Candidate]:
        """Up to `wanted` questions, at most one per family in the first round."""
        chosen: list[Candidate] = []
        groups = self._families(candidates, rng)
        for _ in range(2):
            for group in groups:
                if len(chosen) == wanted:
                    return chosen
                for candidate in group:
                    if candidate not in chosen and answer_allowed(
                        self.answers[candidate.family], candidate.answer
                    ):
                        self.answers[candidate.family][candidate.answer] += 1
                        self.family_totals[candidate.family] += 1
                        chosen.append(candidate)
                        break
        return chosen

    def pick_refexps(
        self, candidates: Sequence[Candidate], wanted: int, rng: random.Random
    ) -> list[Candidate]:
        """Up to `wanted` expressions, preferring new families and new target objects."""
        chosen: list[Candidate] = []
        groups = self._families(candidates, rng)
        for allow_same_target in (False, True):
            for group in groups:
                if len(chosen) == wanted:
                    return chosen
                for candidate in group:
                    targets = {c.target for c in chosen}
                    if candidate not in chosen and (
                        allow_same_target or candidate.target not in targets
                    ):
                        self.family_totals[candidate.family] += 1
                        chosen.append(candidate)
                        break
        return chosen
