"""How fast does `snmn generate` write mini-CLEVR: 2,000 images with 10 questions each?

Runs the whole generator (scene sampling, rendering, ID buffer, PNG files, question and
referring-expression sampling, balancing, JSON files) into a temporary folder with 2 worker
processes, and prints seconds, images/s and questions/s. On a shared machine the wall time
depends on the other load; the CPU seconds (this process and its workers) are the stable figure.
Target: <= 180 s wall on the 2-core dev machine.

    python benchmarks/generate_speed.py [--images 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from pipeline.config import GenerateConfig
from pipeline.minclevr.generate import generate


def cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--questions", type=int, default=10, help="questions per image")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = GenerateConfig(
            output_dir=str(Path(folder) / "mini-clevr"),
            num_images={"train": args.images},
            questions_per_image=args.questions,
            workers=args.workers,
        )
        cpu, start = cpu_seconds(), time.perf_counter()
        summary = generate(config)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    print(
        f"generate_speed: {summary.images} images, {summary.questions} questions, "
        f"{summary.refexps} referring expressions, workers={args.workers}: "
        f"{wall:.1f} s wall ({summary.images / wall:.1f} images/s, "
        f"{summary.questions / wall:.0f} questions/s), {cpu:.1f} s CPU"
    )


if __name__ == "__main__":
    main()
