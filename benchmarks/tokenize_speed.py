"""How fast does `snmn tokenize` turn 700,000 CLEVR questions into Parquet, on one core?

Builds a CLEVR_train_questions.json of realistic questions ("Are there more red cubes than
metal spheres?", "There is a small cube behind the large cylinder that is left of the red
thing; what material is it?") from ten CLEVR-like families with random attribute values, programs
of 6 to 14 nodes (about 10 on average), then runs the full tokenise stage on it — JSON load,
validation, tokens, vocabularies, expert layouts, Parquet write — and prints questions per second
(wall and CPU time: on a shared machine only the CPU figure is stable).

    python benchmarks/tokenize_speed.py [--questions 700000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import tempfile
import time
from pathlib import Path

from pipeline.clevr.readers import iter_questions, paused_gc
from pipeline.config import TokenizeConfig
from pipeline.data.tokenization import tokenize

COLORS = ["gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"]
SHAPES = {"cube": "cubes", "sphere": "spheres", "cylinder": "cylinders"}
SIZES = ["small", "large"]
MATERIALS = {"rubber": "rubber", "metal": "metal"}
RELATIONS = {"left": "left of", "right": "right of", "front": "in front of", "behind": "behind"}
ANSWERS = [str(n) for n in range(11)] + COLORS + list(SHAPES) + SIZES + list(MATERIALS)


class Program:
    """Appends CLEVR program nodes and returns their indices."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []

    def add(self, function: str, inputs: list[int], *values: str) -> int:
        self.nodes.append({"inputs": inputs, "function": function, "value_inputs": list(values)})
        return len(self.nodes) - 1

    def objects(self, rng: random.Random, start: int | None = None) -> tuple[int, str]:
        """Filters by size, color and shape ("large red cube") on `start` or a fresh scene."""
        node = self.add("scene", []) if start is None else start
        size, color, shape = rng.choice(SIZES), rng.choice(COLORS), rng.choice(list(SHAPES))
        node = self.add("filter_size", [node], size)
        node = self.add("filter_color", [node], color)
        node = self.add("filter_shape", [node], shape)
        return node, f"{size} {color} {shape}"

    def unique(self, rng: random.Random, start: int | None = None) -> tuple[int, str]:
        node, words = self.objects(rng, start)
        return self.add("unique", [node]), words

    def related(self, rng: random.Random, hops: int) -> tuple[int, str]:
        """ "the cube [that is] left of the red sphere [that is] behind ..." """
        node, words = self.unique(rng)
        for _ in range(hops):
            relation = rng.choice(list(RELATIONS))
            node = self.add("relate", [node], relation)
            node, target = self.objects(rng, node)
            words = f"{target} {RELATIONS[relation]} the {words}"
            if _ < hops - 1:
                node = self.add("unique", [node])
        return node, words


def make_question(rng: random.Random, family: int) -> tuple[str, list[dict], str]:
    p = Program()
    if family == 0:  # zero-hop query
        node, words = p.unique(rng)
        p.add("query_material", [node])
        return f"What material is the {words}?", p.nodes, rng.choice(list(MATERIALS))
    if family in (1, 2):  # one-hop / two-hop query
        node, words = p.related(rng, hops=family)
        p.add("query_color", [p.add("unique", [node])])
        return f"What color is the {words}?", p.nodes, rng.choice(COLORS)
    if family == 3:  # two-hop count
        node, words = p.related(rng, hops=2)
        p.add("count", [node])
        return f"How many {words} are there?", p.nodes, str(rng.randrange(11))
    if family == 4:  # compare integer
        a, words_a = p.objects(rng)
        count_a = p.add("count", [a])
        b, words_b = p.objects(rng)
        p.add("greater_than", [count_a, p.add("count", [b])])
        return f"Are there more {words_a}s than {words_b}s?", p.nodes, rng.choice(["yes", "no"])
    if family == 5:  # compare attribute
        a, words_a = p.unique(rng)
        query_a = p.add("query_size", [a])
        b, words_b = p.unique(rng)
        p.add("equal_size", [query_a, p.add("query_size", [b])])
        text = f"Is the {words_a} the same size as the {words_b}?"
        return text, p.nodes, rng.choice(["yes", "no"])
    if family == 6:  # same_*
        node, words = p.unique(rng)
        node = p.add("same_shape", [node])
        p.add("exist", [p.add("filter_color", [node], rng.choice(COLORS))])
        text = f"Is there another thing of the same shape as the {words}?"
        return text, p.nodes, rng.choice(["yes", "no"])
    if family == 7:  # or
        a, words_a = p.objects(rng)
        b, words_b = p.objects(rng)
        p.add("count", [p.add("union", [a, b])])
        return f"How many things are {words_a}s or {words_b}s?", p.nodes, str(rng.randrange(11))
    if family == 8:  # and, two relations
        a, words_a = p.related(rng, hops=1)
        b, words_b = p.related(rng, hops=1)
        p.add("count", [p.add("intersect", [a, b])])
        return f"How many things are {words_a} and {words_b}?", p.nodes, str(rng.randrange(11))
    node, words = p.related(rng, hops=1)  # family 9: one-hop compare attribute
    query_a = p.add("query_color", [p.add("unique", [node])])
    b, words_b = p.unique(rng)
    p.add("equal_color", [query_a, p.add("query_color", [b])])
    text = f"There is a {words}; does it have the same color as the {words_b}?"
    return text, p.nodes, rng.choice(["yes", "no"])


def write_questions(path: Path, count: int, seed: int = 0) -> float:
    """Write `count` questions (a sample of 2,000 distinct ones, replicated); mean program size."""
    import orjson

    rng = random.Random(seed)
    sample = []
    for i in range(2000):
        text, program, answer = make_question(rng, i % 10)
        sample.append((text, program, answer, i % 10))
    questions = []
    for i in range(count):
        text, program, answer, family = sample[rng.randrange(len(sample))]
        image = i // 10
        questions.append(
            {
                "split": "train",
                "image_index": image,
                "image_filename": f"CLEVR_train_{image:06d}.png",
                "question_index": i,
                "question": text,
                "answer": answer,
                "question_family_index": family,
                "program": program,
            }
        )
    path.write_bytes(orjson.dumps({"info": {"split": "train"}, "questions": questions}))
    return sum(len(s[1]) for s in sample) / len(sample)


def timed(function, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `function(*args)`."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def read_only(path: Path) -> None:
    with paused_gc():
        for _ in iter_questions(path):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=700_000)
    args = parser.parse_args()
    count = args.questions
    with tempfile.TemporaryDirectory() as workdir:
        questions_dir = Path(workdir) / "questions"
        questions_dir.mkdir()
        path = questions_dir / "CLEVR_train_questions.json"
        # written by a child process, so that the peak memory below is the stage's own
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            mean_nodes = pool.apply(write_questions, (path, count))
        print(
            f"{count} questions, {path.stat().st_size / 1e6:.0f} MB, "
            f"{mean_nodes:.1f} program nodes on average"
        )

        config = TokenizeConfig(
            questions_dir=str(questions_dir),
            output_dir=str(Path(workdir) / "tokens"),
            summary_path=str(Path(workdir) / "summary.json"),
            vqa_splits=("train",),
            ref_splits=(),
        )
        wall, cpu = timed(tokenize, config, 9, (14, 14))
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(
            f"tokenize end to end: {wall:.1f} s wall, {cpu:.1f} s CPU → "
            f"{count / wall:,.0f} questions/s wall, {count / cpu:,.0f} questions/s CPU "
            f"(peak memory {peak_gb:.1f} GB)"
        )
        wall, cpu = timed(read_only, path)
        print(f"of which reading (JSON + validation): {wall:.1f} s wall, {cpu:.1f} s CPU")
        print(
            f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
            "(wall time is only meaningful on an idle machine)"
        )


if __name__ == "__main__":
    main()
