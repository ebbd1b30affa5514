"""Object descriptions as text and as programs: "the large red cube" ⇄ filter_size → filter_color.

A description is a few (attribute, value) pairs in CLEVR's filter order (size, color, material,
shape). "What color is the large metal thing left of the cube?" needs one description that picks
exactly one object among the cube's left neighbours, and it must not name the color it asks
for; `unique_description` finds such descriptions. `random_description` makes the loose ones
that count and exist questions use ("How many red things ..."), sometimes matching nothing so
that "0" and "no" occur. ProgramBuilder writes the official program form node by node. A Hop
("left of the red sphere") and a Chain (two hops) are the relate steps every family shares.

Words are CLEVR's, synonyms included: every time a phrase is written, each word is drawn from
the question's random generator among CLEVR's synonyms, so "the large metal sphere left of the
cube" may also read "the big shiny ball on the left side of the block". Only the text varies;
the program (and so the answer and the expert layout) is the same.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pipeline.clevr.readers import ProgramNode, Scene
from pipeline.clevr.world import ATTRIBUTES, RELATIONS, VALUES

Description = tuple[tuple[str, str], ...]  # ((attribute, value), ...) in ATTRIBUTES order
Sampled = tuple[str, tuple[ProgramNode, ...]]  # text, program
Sampler = Callable[[Scene, random.Random], Sampled | None]  # a family: None = try again

# CLEVR's synonyms (its templates' synonyms.json); a word not listed is its own only synonym.
SYNONYMS = {
    "thing": ("thing", "object"),
    "sphere": ("sphere", "ball"),
    "cube": ("cube", "block"),
    "large": ("large", "big"),
    "small": ("small", "tiny"),
    "metal": ("metal", "metallic", "shiny"),
    "rubber": ("rubber", "matte"),
}
PLURALS = {
    "thing": "things",
    "object": "objects",
    "sphere": "spheres",
    "ball": "balls",
    "cube": "cubes",
    "block": "blocks",
    "cylinder": "cylinders",
}
RELATION_PHRASES = {
    "left": ("left of", "to the left of", "on the left side of"),
    "right": ("right of", "to the right of", "on the right side of"),
    "front": ("in front of",),
    "behind": ("behind",),
}
SAME = {a: f"the same {a} as" for a in ATTRIBUTES}  # "the same color as"


def synonym(word: str, rng: random.Random) -> str:
    """One of the word's synonyms ("metal": "metal", "metallic" or "shiny"), or the word itself."""
    return rng.choice(SYNONYMS.get(word, (word,)))


def noun_phrase(description: Description, rng: random.Random, plural: bool = False) -> str:
    """(("size", "large"), ("shape", "cube")) → "large cube" or "big block" ("... cubes" plural)."""
    values = dict(description)
    words = [synonym(values[a], rng) for a in ATTRIBUTES if a in values and a != "shape"]
    noun = synonym(values.get("shape", "thing"), rng)
    return " ".join([*words, PLURALS[noun] if plural else noun])


def with_article(phrase: str) -> str:
    """ "large cube" → "a large cube"; "object" → "an object"."""
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def relation_phrase(relation: str, rng: random.Random) -> str:
    """ "left" → "left of", "to the left of" or "on the left side of"."""
    return rng.choice(RELATION_PHRASES[relation])


def matching(scene: Scene, pool: Iterable[int], description: Description) -> frozenset[int]:
    """The objects of `pool` that fit every (attribute, value) of the description."""
    return frozenset(
        i
        for i in pool
        if all(getattr(scene.objects[i], attribute) == value for attribute, value in description)
    )


def everyone(scene: Scene) -> frozenset[int]:
    return frozenset(range(len(scene.objects)))


# Every subset of the attributes as (bit mask, attributes), smallest first.
_SUBSETS = [
    (sum(1 << ATTRIBUTES.index(a) for a in attributes), attributes)
    for size in range(len(ATTRIBUTES) + 1)
    for attributes in itertools.combinations(ATTRIBUTES, size)
]


def unique_description(
    scene: Scene,
    target: int,
    pool: Iterable[int],
    rng: random.Random,
    exclude: Iterable[str] = (),
    not_unique_in: Iterable[frozenset[int]] = (),
) -> Description | None:
    """A random description that picks `target` alone out of `pool` (None if none does).

    It must not name the `exclude` attributes, and must not single the target out of any set in
    `not_unique_in` (so the relation that made `pool` is needed: no degenerate relate).
    """
    pool = frozenset(pool)
    obj = scene.objects[target]
    # bit k of differs[j]: object j does not have the target's value of attribute k
    differs = [
        sum(1 << k for k, a in enumerate(ATTRIBUTES) if getattr(other, a) != getattr(obj, a))
        for other in scene.objects
    ]

    def rivals(objects: Iterable[int]) -> list[int] | None:
        """Masks of the other objects a description must rule out (None: target not there)."""
        objects = frozenset(objects)
        return [differs[j] for j in objects if j != target] if target in objects else None

    in_pool = rivals(pool)
    if in_pool is None:
        return None
    elsewhere = [r for r in map(rivals, not_unique_in) if r is not None]
    excluded = sum(1 << ATTRIBUTES.index(a) for a in set(exclude))
    options = [
        tuple((a, getattr(obj, a)) for a in attributes)
        for bits, attributes in _SUBSETS
        if not bits & excluded
        and all(bits & m for m in in_pool)
        and not any(all(bits & m for m in r) for r in elsewhere)
    ]
    return rng.choice(options) if options else None


def random_description(
    scene: Scene, rng: random.Random, exclude: Iterable[str] = (), allow_empty: bool = False
) -> Description:
    """One to three attributes, values copied from a random object or drawn from the vocabulary."""
    allowed = [a for a in ATTRIBUTES if a not in set(exclude)]
    size = rng.choice((0, 1, 1, 1, 2, 2, 3) if allow_empty else (1, 1, 1, 2, 2, 3))
    chosen = rng.sample(allowed, min(size, len(allowed)))
    attributes = [a for a in ATTRIBUTES if a in chosen]  # never iterate a set: hash order varies
    if rng.random() < 0.65:
        source = rng.choice(scene.objects)
        return tuple((a, getattr(source, a)) for a in attributes)
    return tuple((a, rng.choice(VALUES[a])) for a in attributes)


class ProgramBuilder:
    """Appends nodes in topological order; each method returns the new node's index."""

    def __init__(self) -> None:
        self.nodes: list[ProgramNode] = []

    def add(self, function: str, inputs: Iterable[int] = (), value: str | None = None) -> int:
        values = () if value is None else (value,)
        self.nodes.append(ProgramNode(function, tuple(inputs), values))
        return len(self.nodes) - 1

    def scene(self) -> int:
        return self.add("scene")

    def filters(self, node: int, description: Description) -> int:
        for attribute, value in description:
            node = self.add(f"filter_{attribute}", [node], value)
        return node

    def find(self, description: Description) -> int:
        """scene → filters: the set of objects fitting the description."""
        return self.filters(self.scene(), description)

    def find_unique(self, description: Description) -> int:
        return self.add("unique", [self.find(description)])

    def program(self) -> tuple[ProgramNode, ...]:
        return tuple(self.nodes)


def program_to_json(program: Iterable[ProgramNode]) -> list[dict[str, object]]:
    """The official form: {"function", "inputs", "value_inputs"} per node."""
    return [
        {
            "function": node.function,
            "inputs": list(node.inputs),
            "value_inputs": list(node.value_inputs),
        }
        for node in program
    ]


# ---------------------------------------------------------------------------------------------
# Relations: hops from an anchor object, chains of two hops
# ---------------------------------------------------------------------------------------------


def related(scene: Scene, anchor: int, relation: str) -> frozenset[int]:
    return frozenset(scene.relationships[relation][anchor])


def same_set(scene: Scene, anchor: int, attribute: str) -> frozenset[int]:
    value = getattr(scene.objects[anchor], attribute)
    return frozenset(
        i for i, obj in enumerate(scene.objects) if i != anchor and getattr(obj, attribute) == value
    )


@dataclass
class Hop:
    """An anchor object, its description, and the object set one relation away from it."""

    anchor: int
    description: Description
    relation: str
    pool: frozenset[int]

    def phrase(self, rng: random.Random) -> str:
        return f"{relation_phrase(self.relation, rng)} the {noun_phrase(self.description, rng)}"

    def program(self, builder: ProgramBuilder) -> int:
        return builder.add("relate", [builder.find_unique(self.description)], self.relation)


def sample_hop(
    scene: Scene, rng: random.Random, target: int | None = None, avoid: Sequence[int] = ()
) -> Hop | None:
    """A random anchor (not in `avoid`) and relation; with `target`, one that leads to it."""
    anchors = [i for i in range(len(scene.objects)) if i != target and i not in avoid]
    if not anchors:
        return None
    anchor = rng.choice(anchors)
    relations = [r for r in RELATIONS if target is None or target in scene.relationships[r][anchor]]
    description = unique_description(scene, anchor, everyone(scene), rng)
    if description is None or not relations:
        return None
    relation = rng.choice(relations)
    return Hop(anchor, description, relation, related(scene, anchor, relation))


def all_but(scene: Scene, anchor: int) -> frozenset[int]:
    """Every object except the anchor: a relation is needed when a description is ambiguous here."""
    return everyone(scene) - {anchor}


def sample_same_as(
    scene: Scene, rng: random.Random, shared: str, exclude: Sequence[str]
) -> tuple[Description, Description] | None:
    """(anchor, target) descriptions for "the <target> that has the same <shared> as the <anchor>".

    The anchor is described without `shared`; the target is one of the objects sharing it,
    described without `exclude` and so that it would not be unique without the anchor.
    """
    anchor = rng.randrange(len(scene.objects))
    anchor_description = unique_description(scene, anchor, everyone(scene), rng, exclude=[shared])
    pool = same_set(scene, anchor, shared)
    if anchor_description is None or not pool:
        return None
    target = rng.choice(sorted(pool))
    description = unique_description(
        scene, target, pool, rng, exclude=exclude, not_unique_in=[all_but(scene, anchor)]
    )
    return None if description is None else (anchor_description, description)


@dataclass
class Chain:
    """Two hops: anchor → relate → a unique middle object → relate → pool."""

    first: Hop
    middle: int
    description: Description  # of the middle object, unique within first.pool
    relation: str
    pool: frozenset[int]

    def phrase(self, rng: random.Random) -> str:
        middle = noun_phrase(self.description, rng)
        relation = relation_phrase(self.relation, rng)
        return f"{relation} the {middle} that is {self.first.phrase(rng)}"

    def program(self, builder: ProgramBuilder) -> int:
        node = builder.filters(self.first.program(builder), self.description)
        return builder.add("relate", [builder.add("unique", [node])], self.relation)


def sample_chain(scene: Scene, rng: random.Random, target: int | None = None) -> Chain | None:
    """Two hops; with `target`, the last relation leads to it and it is not the first anchor."""
    middle = rng.choice([i for i in range(len(scene.objects)) if i != target])
    relations = [r for r in RELATIONS if target is None or target in scene.relationships[r][middle]]
    first = sample_hop(scene, rng, target=middle, avoid=[] if target is None else [target])
    if first is None or not relations:
        return None
    ambiguous = [all_but(scene, first.anchor)]
    description = unique_description(scene, middle, first.pool, rng, not_unique_in=ambiguous)
    if description is None:
        return None
    relation = rng.choice(relations)
    return Chain(first, middle, description, relation, related(scene, middle, relation))


def two_anchors(scene: Scene, rng: random.Random, target: int) -> tuple[Hop, Hop] | None:
    """Two hops from different anchors that both lead to `target`."""
    first = sample_hop(scene, rng, target=target)
    second = first and sample_hop(scene, rng, target=target, avoid=[first.anchor])
    if first is None or second is None:
        return None
    return first, second
