"""Does the data loader keep up with training? Loader samples/s against trainer samples/s.

For mini-CLEVR questions like "Is there a red cube left of the sphere?" it measures, in one run:
(a) the training DataLoader alone (EpochBatchSampler + whole-batch fetch, features in RAM and read
lazily from the HDF5 shards), (b) the training step alone (forward + backward + Adam + EMA) on a
batch already in memory, and prints a / b: above 1 the loader is not the bottleneck.

    python benchmarks/loader_speed.py --params params.yaml [--batches 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch.utils.data import DataLoader

from pipeline.config import load_config
from pipeline.data.datasets import EpochBatchSampler, QuestionDataset, identity_collate
from pipeline.runtime.inference import to_device
from pipeline.training.loop import backward, load_data, resolve_model_config
from snmn.ema import ModelEMA
from snmn.losses import decayed_parameters
from snmn.model import SNMN


def loader_rate(dataset: QuestionDataset, batch_size: int, batches: int, workers: int) -> float:
    sampler = EpochBatchSampler(len(dataset), batch_size, 0, 1, seed=0, start_step=0)
    loader = DataLoader(
        dataset, batch_sampler=sampler, collate_fn=identity_collate, num_workers=workers
    )
    iterator = iter(loader)
    next(iterator)  # start-up (worker processes, first HDF5 open) is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def trainer_rate(config, tasks, batch_size: int, batches: int) -> float:
    model = SNMN(resolve_model_config(config, tasks))
    ema = ModelEMA(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    decayed, _ = decayed_parameters(model)
    batch = to_device(tasks[0].train.__getitems__(list(range(batch_size))), torch.device("cpu"))
    backward(model, config, "vqa", batch, 0, decayed)  # warm-up
    start = time.perf_counter()
    for step in range(batches):
        optimizer.zero_grad(set_to_none=True)
        backward(model, config, "vqa", batch, step, decayed)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 8.0)
        optimizer.step()
        ema.update(model)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.params)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, task="vqa"))
    batch_size = config.train.batch_size
    tasks = load_data(config)
    trainer = trainer_rate(config, tasks, batch_size, args.batches)
    print(f"trainer step: {trainer:9.0f} questions/s (batch {batch_size})")
    for in_memory in (True, False):
        train = dataclasses.replace(config.train, features_in_memory=in_memory)
        dataset = load_data(dataclasses.replace(config, train=train))[0].train
        for workers in (0, 1):
            rate = loader_rate(dataset, batch_size, args.batches * 5, workers)
            where = "RAM " if in_memory else "HDF5"
            print(
                f"loader {where} workers={workers}: {rate:9.0f} questions/s "
                f"-> loader / trainer = {rate / trainer:6.1f}"
            )


if __name__ == "__main__":
    main()
