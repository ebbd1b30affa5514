"""Two Ray Train CPU workers (gloo) compute what one process computes on the same global batch."""

from __future__ import annotations

import sys

import cloudpickle
import pytest
import torch

from pipeline.config import Config, from_dict, to_dict
from pipeline.data.datasets import QuestionDataset, read_question_table
from pipeline.runtime.inference import accuracy_counts, to_device
from pipeline.training.loop import backward, load_data, resolve_model_config
from snmn.losses import decayed_parameters
from snmn.model import SNMN
from tests.conftest import tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]
GLOBAL_BATCH = 8
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers get this file's functions


def build(config: Config) -> tuple[SNMN, QuestionDataset]:
    tasks = load_data(config)
    torch.manual_seed(0)
    return SNMN(resolve_model_config(config, tasks)), tasks[0].train


def gradients_on(config: Config, rows: list[int], network=None, model=None, dataset=None):
    model_, dataset_ = build(config) if model is None else (model, dataset)
    network = network or model_
    batch = to_device(dataset_.__getitems__(rows), torch.device("cpu"))
    decayed, _ = decayed_parameters(model_)
    backward(network, config, "vqa", batch, step=0, decayed=decayed)
    return {name: p.grad.clone() for name, p in model_.named_parameters() if p.grad is not None}


def worker(loop_config: dict) -> None:
    import ray.train
    from torch.nn.parallel import DistributedDataParallel

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    config = from_dict(Config, loop_config["config"])
    model, dataset = build(config)
    network = DistributedDataParallel(model)
    share = GLOBAL_BATCH // world
    rows = list(range(rank * share, (rank + 1) * share))
    grads = gradients_on(config, rows, network=network, model=model, dataset=dataset)
    val = QuestionDataset(
        read_question_table(config.train.tokens_dir, "val", config.model.num_steps),
        config.train.features_dir,
        "device",
    )
    # uneven shares (rank 0 gets one row more): counts must still add up exactly
    rows = list(range(rank, 13, world))
    metrics = accuracy_counts(model, val, rows, 4, torch.device("cpu"), val.questions.box_grid)
    if rank == 0:
        torch.save({"grads": grads, "metrics": metrics}, loop_config["result"])
    ray.train.report({"done": 1.0})


def test_two_workers_equal_one_process(tiny_data, tmp_path):
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.distributed import quiet_ray_environment

    config = tiny_config(tiny_data, tmp_path, model={"dropout_keep": 1.0})
    result = tmp_path / "rank0.pt"
    quiet_ray_environment()
    ray.init(num_cpus=2, include_dashboard=True, logging_level="WARNING")
    try:
        TorchTrainer(
            worker,
            train_loop_config={"config": to_dict(config), "result": str(result)},
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name="ddp-equivalence", storage_path=str(tmp_path / "ray")),
        ).fit()
    finally:
        ray.shutdown()
    distributed = torch.load(result, weights_only=True)

    single = gradients_on(config, list(range(GLOBAL_BATCH)))
    assert set(single) == set(distributed["grads"])
    for name, grad in single.items():
        torch.testing.assert_close(
            distributed["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}"
        )

    model, _ = build(config)
    val = QuestionDataset(
        read_question_table(config.train.tokens_dir, "val", config.model.num_steps),
        config.train.features_dir,
        "device",
    )
    expected = accuracy_counts(
        model, val, list(range(13)), 4, torch.device("cpu"), val.questions.box_grid
    )
    assert distributed["metrics"]["questions"] == 13
    assert distributed["metrics"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert distributed["metrics"]["layout_step_accuracy"] == pytest.approx(
        expected["layout_step_accuracy"]
    )


@pytest.mark.parametrize("task", ["vqa", "ref", "joint"])
def test_every_task_trains_under_ddp_without_unused_parameter_errors(task, tiny_data, tmp_path):
    """CLEVR-Ref leaves DescribeOne/Two's biases without a gradient: a DDP that is not told so
    fails on its second update ("Expected to have finished reduction in the prior iteration")."""
    import torch.distributed as dist

    from pipeline.training.loop import wrap_ddp

    config = tiny_config(tiny_data, tmp_path, model={"task": task})
    tasks = load_data(config)
    model = SNMN(resolve_model_config(config, tasks))
    decayed, _ = decayed_parameters(model)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        network = wrap_ddp(model, len(tasks))
        for step in range(2):
            for data in tasks:
                batch = to_device(data.train.__getitems__(list(range(4))), torch.device("cpu"))
                backward(network, config, data.task, batch, step=step, decayed=decayed)
    finally:
        dist.destroy_process_group()
    assert all(p.grad is not None for p in model.nmn["Find"].parameters())
