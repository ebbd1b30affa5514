"""Referring-expression families (CLEVR-Ref): programs that end in a set of exactly one object.

"the small cube that is left of the red sphere" is scene → filter_color[red] →
filter_shape[sphere] → unique → relate[left] → filter_size[small] → filter_shape[cube]; the
last node holds one object, whose ID-buffer box is the expression's `bbox`. The families are the
ones SNMN's CLEVR-Ref uses: zero-hop, one-hop, same_relate, and (intersect of two relations) and
or (union of two descriptions). As for questions, every relation must matter: the target's own
description never already singles it out among all objects. The words are CLEVR's, synonyms
drawn at random as for questions ("the big shiny ball on the left side of the block").
"""

from __future__ import annotations

import random

from pipeline.clevr.readers import Scene
from pipeline.clevr.world import ATTRIBUTES
from pipeline.minclevr.phrases import (
    SAME,
    ProgramBuilder,
    Sampled,
    all_but,
    everyone,
    matching,
    noun_phrase,
    random_description,
    sample_hop,
    sample_same_as,
    two_anchors,
    unique_description,
    with_article,
)


def zero_hop(scene: Scene, rng: random.Random) -> Sampled | None:
    target = rng.randrange(len(scene.objects))
    description = unique_description(scene, target, everyone(scene), rng)
    if not description:
        return None
    builder = ProgramBuilder()
    builder.find(description)
    return f"the {noun_phrase(description, rng)}", builder.program()


def one_hop(scene: Scene, rng: random.Random) -> Sampled | None:
    target = rng.randrange(len(scene.objects))
    hop = sample_hop(scene, rng, target=target)
    if hop is None:
        return None
    ambiguous = [all_but(scene, hop.anchor)]
    description = unique_description(scene, target, hop.pool, rng, not_unique_in=ambiguous)
    if description is None:
        return None
    builder = ProgramBuilder()
    builder.filters(hop.program(builder), description)
    return f"the {noun_phrase(description, rng)} that is {hop.phrase(rng)}", builder.program()


def same_relate(scene: Scene, rng: random.Random) -> Sampled | None:
    attribute = rng.choice(ATTRIBUTES)
    found = sample_same_as(scene, rng, attribute, exclude=[attribute])
    if found is None:
        return None
    anchor_description, description = found
    builder = ProgramBuilder()
    node = builder.add(f"same_{attribute}", [builder.find_unique(anchor_description)])
    builder.filters(node, description)
    anchor_phrase = noun_phrase(anchor_description, rng)
    return (
        f"the {noun_phrase(description, rng)} that is {SAME[attribute]} the {anchor_phrase}",
        builder.program(),
    )


def both(scene: Scene, rng: random.Random) -> Sampled | None:
    target = rng.randrange(len(scene.objects))
    hops = two_anchors(scene, rng, target)
    if hops is None:
        return None
    pool = hops[0].pool & hops[1].pool
    ambiguous = [hop.pool for hop in hops]  # both relations are needed
    description = unique_description(scene, target, pool, rng, not_unique_in=ambiguous)
    if description is None:
        return None
    builder = ProgramBuilder()
    node = builder.add("intersect", [hop.program(builder) for hop in hops])
    builder.filters(node, description)
    hop_phrases = f"{hops[0].phrase(rng)} and {hops[1].phrase(rng)}"
    text = f"the {noun_phrase(description, rng)} that is {hop_phrases}"
    return text, builder.program()


def either(scene: Scene, rng: random.Random) -> Sampled | None:
    """The one object fitting description A, or B where B fits nothing else (maybe nothing)."""
    target = rng.randrange(len(scene.objects))
    first = unique_description(scene, target, everyone(scene), rng)
    second = random_description(scene, rng)
    if not first or first == second or not matching(scene, everyone(scene), second) <= {target}:
        return None
    if rng.random() < 0.5:
        first, second = second, first
    builder = ProgramBuilder()
    builder.add("union", [builder.find(first), builder.find(second)])
    a, b = with_article(noun_phrase(first, rng)), with_article(noun_phrase(second, rng))
    text = f"the {noun_phrase((), rng)} that is either {a} or {b}"
    return text, builder.program()
