"""Training speed of the SNMN model: one forward + backward, against what cannot be avoided.

For each profile (the offline default of params.yaml, and the official CLEVR sizes: 14×14×1024
features, 512-d kb and memory) it times, interleaved so that a busy machine slows all alike, on
random inputs shaped like real ones ("What color is the large cube?" padded to 30 tokens):

  fast       the model's default formulation (docs/model.md, "Exact rewrites")
  reference  every module computed as written in the paper
  floor      the knowledge base alone: its two 1×1 convolutions forward, and backward to their
             weights (the features need no gradient), the one large product of the step

and prints milliseconds per step, questions per second and fast / floor. Example:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/model_speed.py --threads 2

On a shared CPU, OpenMP threads that spin-wait for each other can make a 2-thread run ten times
slower than a 1-thread one; OMP_WAIT_POLICY=PASSIVE (or --threads 1) avoids that.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

from pipeline.config import load_config
from snmn.config import ModelConfig
from snmn.losses import training_loss
from snmn.model import SNMN


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the offline profile's model")
    parser.add_argument("--profiles", nargs="+", default=["offline", "official"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--question-length", type=int, default=30, help="padded length S")
    parser.add_argument("--vocab-size", type=int, default=90)
    parser.add_argument("--num-answers", type=int, default=28)
    parser.add_argument("--iterations", type=int, default=5, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--skip-reference", action="store_true")
    return parser.parse_args()


def profile_config(name: str, args: argparse.Namespace) -> ModelConfig:
    sizes = {"vocab_size": args.vocab_size, "num_answers": args.num_answers}
    if name == "official":
        return ModelConfig(**sizes)
    if name == "offline":
        return dataclasses.replace(load_config(args.params).model, **sizes)
    raise SystemExit(f"--profiles: unknown profile {name!r} (offline, official)")


def synthetic_batch(config: ModelConfig, batch: int, length: int, device: str):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, config.vocab_size, (batch, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=generator)
    shape = (batch, config.feature_height, config.feature_width, config.feature_dim)
    features = torch.randn(shape, generator=generator).half()  # stored as float16
    layouts = torch.randint(0, 9, (batch, config.num_steps), generator=generator)
    answers = torch.randint(0, config.num_answers, (batch,), generator=generator)
    return [t.to(device) for t in (tokens, lengths, features, layouts, answers)]


def model_step(model: SNMN, batch) -> Callable[[], None]:
    """One training step's forward and backward (no optimizer: it costs the same either way)."""
    tokens, lengths, features, layouts, answers = batch
    model.train()

    def step() -> None:
        output = model(tokens, lengths, features)
        loss = training_loss(output, answers=answers, layouts=layouts)["total"]
        model.zero_grad(set_to_none=True)
        loss.backward()

    return step


def floor_step(model: SNMN, batch) -> Callable[[], None]:
    """The knowledge base's two 1×1 convolutions, forward and backward to their weights."""
    features = batch[2]

    def step() -> None:
        kb = model.knowledge_base(features)
        model.zero_grad(set_to_none=True)
        kb.sum().backward()

    return step


def timed(step: Callable[[], None], device: str) -> float:
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
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {args.device} ({name}), torch threads: {torch.get_num_threads()}")
    for profile in args.profiles:
        config = profile_config(profile, args)
        torch.manual_seed(0)
        fast = SNMN(config).to(args.device)
        reference = SNMN(dataclasses.replace(config, fast=False)).to(args.device)
        reference.load_state_dict(fast.state_dict())
        grid = f"{config.feature_height}×{config.feature_width}×{config.feature_dim}"
        for batch_size in args.batch_sizes:
            print(
                f"{profile} profile (features {grid}, kb {config.kb_dim}, lstm "
                f"{config.lstm_dim}), batch {batch_size}, question length {args.question_length}"
            )
            batch = synthetic_batch(config, batch_size, args.question_length, args.device)
            paths = {"fast": model_step(fast, batch)}
            if not args.skip_reference:
                paths["reference"] = model_step(reference, batch)
            paths["floor"] = floor_step(fast, batch)
            measure(paths, batch_size, args)


def measure(paths: dict[str, Callable[[], None]], batch_size: int, args) -> None:
    for step in paths.values():
        for _ in range(args.warmup):
            step()
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.iterations):  # interleaved: a busy machine slows every path alike
        for name, step in paths.items():
            seconds[name].append(timed(step, args.device))
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    for name, times in seconds.items():
        print(
            f"{name:>10}: median {medians[name] * 1000:8.1f} ms/step = "
            f"{batch_size / medians[name]:7.1f} q/s  (best {min(times) * 1000:8.1f} ms)"
        )
    if "reference" in medians:
        print(f"  reference / fast (medians): {medians['reference'] / medians['fast']:.2f}x")
    print(f"  fast / floor (medians):     {medians['fast'] / medians['floor']:.2f}x")


if __name__ == "__main__":
    main()
