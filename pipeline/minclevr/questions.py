"""VQA question families: the samplers behind CLEVR-style templates.

One family is one pattern of CLEVR's template schema, e.g. one-hop query_color:
"What color is the <Z2> <M2> <S2> that is <R> the <Z> <C> <M> <S>?" with the program
scene → filters → unique → relate[R] → filters → unique → query_color. A sampler picks objects
and descriptions in a scene so that the quality rules hold by construction: every `unique` sees
exactly one object, a question never names the attribute it asks for, every relate and every
branch of and/or changes the result (no degenerate chains), and count/exist descriptions
sometimes match nothing. It returns the text and the program; the executor computes the answer.
The text takes one of CLEVR's phrasings of the pattern at random ("What color is the cube?",
"There is a block; what is its color?", "The cube is what color?"), in CLEVR's words.
The families cover every SNMN module pattern: zero-hop, one- and two-hop relate, same_*, compare
integer, compare attribute, and (intersect), or (union). families.py lists them.
"""

from __future__ import annotations

import random

from pipeline.clevr.readers import Scene
from pipeline.clevr.world import ATTRIBUTES
from pipeline.minclevr.phrases import (
    SAME,
    Description,
    ProgramBuilder,
    Sampled,
    Sampler,
    all_but,
    everyone,
    matching,
    noun_phrase,
    random_description,
    sample_chain,
    sample_hop,
    sample_same_as,
    two_anchors,
    unique_description,
    with_article,
)

# {x}: "large cube that is left of the sphere"; {a_x}: the same with its article ("a large ...").
QUERY_TEXTS = {
    "color": (
        "What color is the {x}?",
        "What is the color of the {x}?",
        "The {x} is what color?",
        "There is {a_x}; what color is it?",
        "There is {a_x}; what is its color?",
    ),
    "shape": (
        "What shape is the {x}?",
        "What is the shape of the {x}?",
        "The {x} is what shape?",
        "There is {a_x}; what shape is it?",
        "There is {a_x}; what is its shape?",
    ),
    "size": (
        "What size is the {x}?",
        "How big is the {x}?",
        "The {x} is what size?",
        "There is {a_x}; what size is it?",
        "There is {a_x}; how big is it?",
    ),
    "material": (
        "What material is the {x}?",
        "What is the {x} made of?",
        "The {x} is made of what material?",
        "There is {a_x}; what is it made of?",
        "There is {a_x}; what material is it?",
    ),
}
COMPARE_TEXTS = {
    "equal_integer": (
        "Are there an equal number of {a} and {b}?",
        "Are there the same number of {a} and {b}?",
        "Is the number of {a} the same as the number of {b}?",
    ),
    "less_than": (
        "Are there fewer {a} than {b}?",
        "Is the number of {a} less than the number of {b}?",
    ),
    "greater_than": (
        "Are there more {a} than {b}?",
        "Is the number of {a} greater than the number of {b}?",
    ),
}
COUNT_TEXTS = ("How many {x}?", "What number of {x}?")
EXIST_TEXTS = ("Are there any {x}?", "Is there {a_s}?")
ZERO_HOP_COUNT_TAILS = ("are there", "are visible")  # "How many cubes are visible?"


def query_text(attribute: str, x: str, rng: random.Random) -> str:
    """One of CLEVR's phrasings of "What color is the {x}?" (or shape, size, material)."""
    return rng.choice(QUERY_TEXTS[attribute]).format(x=x, a_x=with_article(x))


# ---------------------------------------------------------------------------------------------
# Helpers of the count / exist samplers
# ---------------------------------------------------------------------------------------------


def _outer(
    scene: Scene, rng: random.Random, pool: frozenset[int], anchor: int, exclude=()
) -> Description | None:
    """A loose description for count/exist over `pool`, rejected when `pool` would not matter."""
    description = random_description(scene, rng, exclude=exclude, allow_empty=True)
    rest = everyone(scene) - {anchor}
    if matching(scene, pool, description) == matching(scene, rest, description):
        return None
    return description


def _ending(builder: ProgramBuilder, node: int, description: Description, function: str) -> Sampled:
    builder.add(function, [builder.filters(node, description)])
    return builder.program()


def _count_or_exist(function: str, rng: random.Random, description: Description, tail: str) -> str:
    if function == "count":
        return rng.choice(COUNT_TEXTS).format(
            x=f"{noun_phrase(description, rng, plural=True)} {tail}".strip()
        )
    text = rng.choice(EXIST_TEXTS)
    plural, single = noun_phrase(description, rng, plural=True), noun_phrase(description, rng)
    return text.format(x=f"{plural} {tail}".strip(), a_s=with_article(f"{single} {tail}".strip()))


# ---------------------------------------------------------------------------------------------
# VQA samplers
# ---------------------------------------------------------------------------------------------


def zero_hop(function: str) -> Sampler:
    def sample(scene: Scene, rng: random.Random) -> Sampled | None:
        description = random_description(scene, rng, allow_empty=function == "count")
        builder = ProgramBuilder()
        program = _ending(builder, builder.scene(), description, function)
        tail = rng.choice(ZERO_HOP_COUNT_TAILS) if function == "count" else ""
        return _count_or_exist(function, rng, description, tail), program

    return sample


def zero_hop_query(attribute: str) -> Sampler:
    def sample(scene: Scene, rng: random.Random) -> Sampled | None:
        target = rng.randrange(len(scene.objects))
        description = unique_description(scene, target, everyone(scene), rng, exclude=[attribute])
        if description is None:
            return None
        builder = ProgramBuilder()
        builder.add(f"query_{attribute}", [builder.find_unique(description)])
        return query_text(attribute, noun_phrase(description, rng), rng), builder.program()

    return sample


def one_hop(function: str) -> Sampler:
    return _related(function, hops=1)


def one_hop_query(attribute: str) -> Sampler:
    return _related_query(attribute, hops=1)


def two_hop(function: str) -> Sampler:
    return _related(function, hops=2)


def two_hop_query(attribute: str) -> Sampler:
    return _related_query(attribute, hops=2)


def _relation(scene: Scene, rng: random.Random, hops: int, target: int | None = None):
    """(a relate hop or a two-hop chain, the object the outer description is relative to)."""
    if hops == 1:
        hop = sample_hop(scene, rng, target=target)
        return hop and (hop, hop.anchor)
    chain = sample_chain(scene, rng, target=target)
    return chain and (chain, chain.middle)


def _related(function: str, hops: int) -> Sampler:
    """count / exist over the objects `hops` relations away: "How many cubes are left of ...?"."""

    def sample(scene: Scene, rng: random.Random) -> Sampled | None:
        found = _relation(scene, rng, hops)
        description = found and _outer(scene, rng, found[0].pool, found[1])
        if description is None:
            return None
        relation = found[0]
        builder = ProgramBuilder()
        program = _ending(builder, relation.program(builder), description, function)
        phrase = relation.phrase(rng)
        tail = f"are {phrase}" if function == "count" else phrase
        return _count_or_exist(function, rng, description, tail), program

    return sample


def _related_query(attribute: str, hops: int) -> Sampler:
    """query_* of the one object `hops` relations away: "What color is the cube left of ...?"."""

    def sample(scene: Scene, rng: random.Random) -> Sampled | None:
        target = rng.randrange(len(scene.objects))
        found = _relation(scene, rng, hops, target=target)
        if found is None:
            return None
        relation, reference = found
        description = unique_description(
            scene,
            target,
            relation.pool,
            rng,
            exclude=[attribute],
            not_unique_in=[all_but(scene, reference)],
        )
        if description is None:
            return None
        builder = ProgramBuilder()
        node = builder.add("unique", [builder.filters(relation.program(builder), description)])
        builder.add(f"query_{attribute}", [node])
        x = f"{noun_phrase(description, rng)} that is {relation.phrase(rng)}"
        return query_text(attribute, x, rng), builder.program()

    return sample


def same(function: str) -> Sampler:
    def sample(scene: Scene, rng: random.Random) -> Sampled | None:
        attribute = rng.choice(ATTRIBUTES)
        anchor = rng.randrange(len(scene.objects))
        anchor_description = unique_description(
            scene, anchor, everyone(scene), rng, exclude=[attribute]
        )
        if anchor_description is None:
            return None
        description = random_description(scene, rng, exclude=[attribute], allow_empty=True)
        builder = ProgramBuilder()
        node = builder.add(f"same_{attribute}", [builder.find_unique(anchor_description)])
        program = _ending(builder, node, description, function)
        plural, single = noun_phrase(description, rng, True), noun_phrase(description, rng)
        tail = f"{SAME[attribute]} the {noun_phrase(anchor_description, rng)}"
        if function == "count":
            texts = [
                f"How many other {plural} have {tail}?",
                f"What number of other {plural} have {tail}?",
                f"How many other {plural} are {tail}?",
            ]
        else:
            texts = [
                f"Are there any other {plural} that have {tail}?",
                f"Is there another {single} that has {tail}?"
                if description
                else f"Is there anything else that is {tail}?",  # no filter: "anything else"
            ]
        return rng.choice(texts), program

    return sample


def same_query(attribute: str) -> Sampler:
    def sample(scene: Scene, rng: random.Random) -> Sampled | None:
        shared = rng.choice([a for a in ATTRIBUTES if a != attribute])
        found = sample_same_as(scene, rng, shared, exclude=[attribute, shared])
        if found is None:
            return None
        anchor_description, description = found
        builder = ProgramBuilder()
        node = builder.add(f"same_{shared}", [builder.find_unique(anchor_description)])
        node = builder.add("unique", [builder.filters(node, description)])
        builder.add(f"query_{attribute}", [node])
        anchor_phrase = noun_phrase(anchor_description, rng)
        x = f"{noun_phrase(description, rng)} that is {SAME[shared]} the {anchor_phrase}"
        return query_text(attribute, x, rng), builder.program()

    return sample


def compare_integer(function: str) -> Sampler:
    def sample(scene: Scene, rng: random.Random) -> Sampled | None:
        first, second = random_description(scene, rng), random_description(scene, rng)
        counts = [len(matching(scene, everyone(scene), d)) for d in (first, second)]
        if first == second or counts == [0, 0]:
            return None
        builder = ProgramBuilder()
        left = builder.add("count", [builder.find(first)])
        right = builder.add("count", [builder.find(second)])
        builder.add(function, [left, right])
        a, b = noun_phrase(first, rng, True), noun_phrase(second, rng, True)
        return rng.choice(COMPARE_TEXTS[function]).format(a=a, b=b), builder.program()

    return sample


def compare_attribute(attribute: str) -> Sampler:
    def sample(scene: Scene, rng: random.Random) -> Sampled | None:
        first, second = rng.sample(range(len(scene.objects)), 2)
        descriptions = [
            unique_description(scene, i, everyone(scene), rng, exclude=[attribute])
            for i in (first, second)
        ]
        if None in descriptions:
            return None
        builder = ProgramBuilder()
        queries = [
            builder.add(f"query_{attribute}", [builder.find_unique(d)]) for d in descriptions
        ]
        builder.add(f"equal_{attribute}", queries)
        a, b = (noun_phrase(d, rng) for d in descriptions)
        text = rng.choice(
            (
                f"Is the {a} {SAME[attribute]} the {b}?",
                f"Does the {a} have {SAME[attribute]} the {b}?",
                f"Do the {a} and the {b} have the same {attribute}?",
                f"Are the {a} and the {b} the same {attribute}?",
            )
        )
        return text, builder.program()

    return sample


def both(function: str) -> Sampler:
    """and: objects that are R1 of one anchor and R2 of another (intersect)."""

    def sample(scene: Scene, rng: random.Random) -> Sampled | None:
        hops = two_anchors(scene, rng, rng.randrange(len(scene.objects)))
        if hops is None:
            return None
        pool = hops[0].pool & hops[1].pool
        description = random_description(scene, rng, allow_empty=True)
        result = matching(scene, pool, description)
        if any(result == matching(scene, hop.pool, description) for hop in hops):
            return None
        builder = ProgramBuilder()
        node = builder.add("intersect", [hop.program(builder) for hop in hops])
        program = _ending(builder, node, description, function)
        tail = f"{hops[0].phrase(rng)} and {hops[1].phrase(rng)}"
        plural = noun_phrase(description, rng, plural=True)
        if function == "count":
            how_many = rng.choice(("How many", "What number of"))
            return f"{how_many} {plural} are both {tail}?", program
        return f"Are there any {plural} that are {tail}?", program

    return sample


def either(scene: Scene, rng: random.Random) -> Sampled | None:
    """or: how many things fit one description or the other (union), both branches mattering."""
    first, second = random_description(scene, rng), random_description(scene, rng)
    sets = [matching(scene, everyone(scene), d) for d in (first, second)]
    if not (sets[0] - sets[1]) or not (sets[1] - sets[0]):
        return None
    builder = ProgramBuilder()
    builder.add("count", [builder.add("union", [builder.find(first), builder.find(second)])])
    a, b = noun_phrase(first, rng, True), noun_phrase(second, rng, True)
    things = noun_phrase((), rng, plural=True)  # "things" or "objects"
    return rng.choice(
        ("How many {t} are either {a} or {b}?", "What number of {t} are either {a} or {b}?")
    ).format(t=things, a=a, b=b), builder.program()
