"""Training speed of the SNMN model: forward + backward questions per second.

Runs the default (official CLEVR) VQA model at batch 64 on random inputs shaped like real ones
("What color is the large cube?" padded to the batch's longest question, 14×14×1024 features)
with the fast path and the reference formulation, on cuda if available, and prints both and
their ratio. The two paths run interleaved, so that a busy machine slows both alike. Example:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/model_speed.py --threads 2 --batch-sizes 64 128

On a shared CPU, OpenMP threads that spin-wait for each other can make a 2-thread run ten times
slower than a 1-thread one; OMP_WAIT_POLICY=PASSIVE (or --threads 1) avoids that.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from snmn.config import ModelConfig
from snmn.losses import training_loss
from snmn.model import SNMN


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--question-length", type=int, default=30, help="padded length S")
    parser.add_argument("--vocab-size", type=int, default=90)
    parser.add_argument("--iterations", type=int, default=5, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--skip-reference", action="store_true")
    return parser.parse_args()


def synthetic_batch(config: ModelConfig, batch: int, length: int, device: str):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, config.vocab_size, (batch, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=generator)
    shape = (batch, config.feature_height, config.feature_width, config.feature_dim)
    features = torch.randn(shape, generator=generator).half()  # stored as float16
    layouts = torch.randint(0, 9, (batch, config.num_steps), generator=generator)
    answers = torch.randint(0, config.num_answers, (batch,), generator=generator)
    return [t.to(device) for t in (tokens, lengths, features, layouts, answers)]


def make_step(model: SNMN, batch):
    """One training step's forward and backward (no optimizer: it costs the same either way)."""
    tokens, lengths, features, layouts, answers = batch
    model.train()

    def step() -> None:
        output = model(tokens, lengths, features)
        loss = training_loss(output, answers=answers, layouts=layouts)["total"]
        model.zero_grad(set_to_none=True)
        loss.backward()

    return step


def timed(step, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    config = ModelConfig(vocab_size=args.vocab_size)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {args.device} ({name}), torch threads: {torch.get_num_threads()}")
    torch.manual_seed(0)
    fast = SNMN(config).to(args.device)
    reference = None
    if not args.skip_reference:
        reference = SNMN(dataclasses.replace(config, fast=False)).to(args.device)
        reference.load_state_dict(fast.state_dict())
    for batch_size in args.batch_sizes:
        print(f"batch {batch_size}, question length {args.question_length}, default config")
        batch = synthetic_batch(config, batch_size, args.question_length, args.device)
        paths = {"fast": make_step(fast, batch)}
        if reference is not None:
            paths["reference"] = make_step(reference, batch)
        measure(paths, batch_size, args)


def measure(paths: dict, batch_size: int, args: argparse.Namespace) -> None:
    for step in paths.values():
        for _ in range(args.warmup):
            step()
    # interleaved, so that a busy shared machine slows both paths alike
    seconds = {name: [] for name in paths}
    for _ in range(args.iterations):
        for name, step in paths.items():
            seconds[name].append(timed(step, args.device))
    for name, times in seconds.items():
        median, best = statistics.median(times), min(times)
        print(
            f"{name:>9}: median {median * 1000:8.1f} ms/step = {batch_size / median:7.1f} q/s"
            f"  (best {batch_size / best:7.1f} q/s)"
        )
    if "reference" in seconds:
        ratio = statistics.median(seconds["reference"]) / statistics.median(seconds["fast"])
        print(f"fast / reference speed-up (medians): {ratio:.1f}x")


if __name__ == "__main__":
    main()
