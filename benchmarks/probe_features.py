"""Do the features see? Linear-probe tables for three backbones on mini-CLEVR val, in one run.

Before training SNMN on "What colour is the small metal cube?", compare at the same input size:
(a) ResNet-18 pretrained on the TRAIN scenes (snmn pretrain-backbone), (b) random-init
ResNet-101 conv4 with calibrated BatchNorm (extract.weights random) and (c) random-init ResNet-18.
Each backbone's val features are extracted with the real extract stage, then probed per attribute
on the cell under each object's centre (pipeline/vision/probe.py). Prints the pretraining wall time,
every probe table and a summary against the targets for (a).

    python benchmarks/probe_features.py --data /tmp/mini-clevr --work /tmp/probe-bench

where --data is a generated mini-CLEVR tree (images/{train,val}, scenes/) e.g. from
GenerateConfig(num_images={"train": 1500, "val": 300, "test": 0}, questions_per_image=0).
Do the default run's features see real renders? Probe its backbone on real CLEVR train images
with their scenes (a subset, gaps and all, is fine):

    python benchmarks/probe_features.py --data <CLEVR_v1.0 or a part of it> --split train \
        --weights models/backbone/scenes_resnet18.pt --skip-random --work /tmp/probe-real
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from pipeline.config import ExtractConfig, PretrainConfig
from pipeline.vision.features import extract_features
from pipeline.vision.pretrain import pretrain_backbone
from pipeline.vision.probe import ProbeRow, format_table, object_cells, probe

TARGETS = {"color": 0.98, "shape": 0.95, "material": 0.95, "size": 0.95}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="mini-CLEVR tree with train and val")
    parser.add_argument("--work", required=True, help="folder for weights and features")
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--width", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=PretrainConfig.epochs)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for pretraining")
    parser.add_argument("--weights", default="", help="reuse a pretrained file, skip pretraining")
    parser.add_argument("--skip-random", action="store_true", help="probe only (a)")
    parser.add_argument(
        "--split", default="val", help="the split probed (train for CLEVR's real train sample)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data, work = Path(args.data), Path(args.work)
    size = {"input_height": args.height, "input_width": args.width}

    weights = args.weights
    if not weights:
        config = PretrainConfig(
            images_dir=str(data / "images"),
            scenes_dir=str(data / "scenes"),
            output_path=str(work / "pretrained" / "backbone.pt"),
            metrics_path=str(work / "pretrained" / "pretrain.json"),
            curve_path=str(work / "pretrained" / "curve.csv"),
            epochs=args.epochs,
            torch_threads=args.threads,
            **size,
        )
        started = time.perf_counter()
        pretrain_backbone(config)
        wall = time.perf_counter() - started
        metrics = json.loads(Path(config.metrics_path).read_text())
        print(
            f"\npretrain wall time: {wall:.1f} s (decode + {metrics['train_seconds']} s training)"
        )
        print(f"pretrain metrics: {json.dumps(metrics)}")
        weights = config.output_path

    candidates = {"(a) resnet18 pretrained on train scenes": ("resnet18", weights)}
    if not args.skip_random:
        candidates["(b) resnet101 random, BN calibrated"] = ("resnet101", "random")
        candidates["(c) resnet18 random, BN calibrated"] = ("resnet18", "random")
    scenes_path = data / "scenes" / f"CLEVR_{args.split}_scenes.json"
    tables: dict[str, list[ProbeRow]] = {}
    for number, (name, (backbone, source)) in enumerate(candidates.items()):
        extract = ExtractConfig(
            images_dir=str(data / "images"),
            output_dir=str(work / f"features_{number}"),
            splits=(args.split,),
            backbone=backbone,
            weights=source,
            decode_workers=1,
            **size,
        )
        started = time.perf_counter()
        extract_features(extract)
        seconds = time.perf_counter() - started
        torch.set_num_threads(args.threads)  # extract sets every core
        manifest = work / f"features_{number}" / args.split / "manifest.json"
        cells = object_cells(manifest, scenes_path)
        tables[name] = probe(cells)
        print(f"\n{format_table(tables[name], title=f'{name}: extract {seconds:.1f} s')}")

    print(f"\nsummary, {data} {args.split}, {args.height}x{args.width} input, probe / majority")
    print(f"{'features':<42} " + " ".join(f"{name:>13}" for name in TARGETS))
    for name, rows in tables.items():
        cells_text = " ".join(f"{row.accuracy:>6.3f}/{row.majority:.3f}" for row in rows)
        print(f"{name:<42} {cells_text}")
    first = next(iter(tables.values()))
    met = all(row.accuracy >= TARGETS[row.attribute] for row in first)
    print(f"targets for (a) {TARGETS}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
