"""The published SNMN numbers as data, and the table that sets a run next to them.

"How many cubes are there?" answered right 96.6% of the time on CLEVR val is the paper's headline
(VQA with expert layouts); the public PyTorch port reports 96.1% for the same setting. This file
holds that table (Hu et al., ECCV 2018, Tables 1 and 2; the port's README) with where each number
comes from, decides which row a trained model belongs to (task, with or without expert layouts), and
writes the comparison as Markdown and JSON. It says plainly which dataset the run used: numbers on
the offline mini-CLEVR, on features from untrained weights, or on part of a split (a subset of CLEVR
whose other images have no features, or evaluate.max_questions), are not comparable with the
paper's.
"""

from __future__ import annotations

from typing import Any

SOURCES: dict[str, str] = {
    "paper": (
        "Hu, Andreas, Darrell, Saenko. Explainable Neural Computation via Stack Neural Module "
        "Networks. ECCV 2018, arXiv:1807.08556 (CLEVR and CLEVR-Ref val results). The figures "
        "used here are the 'Expected accuracy' lines of the official TensorFlow release, "
        "github.com/ronghanghu/snmn README.md (commit 05186e60cd740a9478e8ca05cba6bd31ab93e0df), "
        "'Test' section; its 'Training' notes say the scratch runs are the best of 4 trials."
    ),
    "port": (
        "Public PyTorch port github.com/hamishivi/snmn-pytorch README.md (commit "
        "99bb7261899f62c602896170da1bb8cd3be0b401), 'Results' table, column 'Our Performance'."
    ),
}
PAPER_DATASET = "CLEVR v1.0 val (149,991 questions) and CLEVR-Ref loc_val; 200k iterations, EMA"
PAPER_ITERATIONS = 200_000

# (setting, metric, official release %, public PyTorch port %); official configs in parentheses.
PUBLISHED: tuple[dict[str, Any], ...] = (
    {"setting": "vqa_gt_layout", "metric": "vqa_accuracy", "paper": 96.6, "port": 96.1},
    {"setting": "vqa_scratch", "metric": "vqa_accuracy", "paper": 93.0, "port": 89.5},
    {"setting": "loc_gt_layout", "metric": "ref_p_at_1", "paper": 96.0, "port": 93.2},
    {"setting": "loc_scratch", "metric": "ref_p_at_1", "paper": 93.4, "port": 88.7},
    {"setting": "joint_gt_layout", "metric": "vqa_accuracy", "paper": 96.5, "port": 95.9},
    {"setting": "joint_gt_layout", "metric": "ref_p_at_1", "paper": 96.2, "port": 95.7},
    {"setting": "joint_scratch", "metric": "vqa_accuracy", "paper": 93.9, "port": 90.4},
    {"setting": "joint_scratch", "metric": "ref_p_at_1", "paper": 95.4, "port": 81.4},
)
SETTING_NAMES: dict[str, str] = {
    "vqa_gt_layout": "VQA, expert layouts",
    "vqa_scratch": "VQA, no layouts (best of 4 runs)",
    "loc_gt_layout": "REF, expert layouts",
    "loc_scratch": "REF, no layouts",
    "joint_gt_layout": "joint, expert layouts",
    "joint_scratch": "joint, no layouts",
}
METRIC_NAMES = {"vqa_accuracy": "VQA accuracy", "ref_p_at_1": "REF P@1"}


def setting_of(task: str, use_layouts: bool) -> str:
    """The official config name a model belongs to: vqa | loc | joint, gt_layout | scratch."""
    prefix = {"vqa": "vqa", "ref": "loc", "joint": "joint"}[task]
    return f"{prefix}_{'gt_layout' if use_layouts else 'scratch'}"


def describe_dataset(
    questions_info: dict[str, Any],
    split: str,
    features: dict[str, Any] | None,
    questions: dict[str, int] | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Which dataset a split is, and why its numbers may not compare with the paper's.

    `questions_info` is the `info` of the questions file; `features` the feature manifest;
    `questions` how many of the split's were scored: {"total", "scored",
    "skipped_without_features"} (the rest were beyond evaluate.max_questions); `training` what
    the model learnt from (model.pt's training_data: dataset_version, split, iterations).
    """
    version = str(questions_info.get("version", ""))
    mini = version.lower().startswith("mini-clevr")
    name = f"mini-CLEVR ({version}, generated offline)" if mini else f"CLEVR v{version or '?'}"
    reasons = []
    if mini:
        reasons.append(
            "the run used mini-CLEVR, the offline generated stand-in; the paper reports CLEVR v1.0"
        )
    trained_on = str((training or {}).get("dataset_version") or "")
    if trained_on.lower().startswith("mini-clevr"):
        reasons.append(
            f"the model was trained on mini-CLEVR ({trained_on}, {training['split']}), not on "
            "CLEVR v1.0 train"
        )
    iterations = (training or {}).get("iterations")
    if iterations and iterations < PAPER_ITERATIONS:
        reasons.append(
            f"the model was trained for {iterations:,} iterations; the paper's for "
            f"{PAPER_ITERATIONS:,}"
        )
    if split not in ("val", "loc_val"):
        reasons.append(f"the run was evaluated on split {split!r}; the paper reports val")
    if features is not None and not features.get("pretrained", False):
        reasons.append(
            f"image features come from untrained {features.get('backbone', '?')} weights "
            f"({features.get('weights', '?')}); the paper uses ImageNet ResNet-101"
        )
    elif features is not None and features.get("backbone") != "resnet101":
        reasons.append(f"image features come from {features.get('backbone')}, not ResNet-101")
    if questions is not None and questions["scored"] < questions["total"]:
        why = []
        if questions["skipped_without_features"]:
            why.append(f"{questions['skipped_without_features']:,} have no image features")
        if questions["total"] - questions["skipped_without_features"] > questions["scored"]:
            why.append("evaluate.max_questions stopped before the rest")
        reasons.append(
            f"{questions['scored']:,} of {questions['total']:,} {split} questions scored "
            f"({'; '.join(why)})"
        )
    return {"name": name, "split": split, "comparable": not reasons, "reasons": reasons}


def comparison(
    task: str, use_layouts: bool, run: dict[str, float | None], dataset: dict[str, Any]
) -> dict[str, Any]:
    """Every published row, with this run's value (%) in the rows of its own setting.

    `run` maps metric names (vqa_accuracy, ref_p_at_1) to fractions in [0, 1].
    """
    own = setting_of(task, use_layouts)
    rows = []
    for entry in PUBLISHED:
        value = run.get(entry["metric"]) if entry["setting"] == own else None
        rows.append(
            {
                **entry,
                "setting_name": SETTING_NAMES[entry["setting"]],
                "this_run": None if value is None else round(100.0 * value, 2),
            }
        )
    return {
        "dataset": dataset,
        "paper_dataset": PAPER_DATASET,
        "this_setting": own,
        "rows": rows,
        "sources": SOURCES,
    }


def comparison_markdown(table: dict[str, Any], extra: list[str] | None = None) -> str:
    """The comparison as a Markdown document (for the repo, DVC and MLflow)."""
    dataset = table["dataset"]
    verdict = (
        "comparable with the published numbers"
        if dataset["comparable"]
        else "**NOT comparable** with the published numbers: " + "; ".join(dataset["reasons"])
    )
    lines = [
        "# SNMN: this run next to the published numbers",
        "",
        f"**Dataset of this run: {dataset['name']}, split `{dataset['split']}`.** "
        f"These numbers are {verdict}.",
        "",
        f"Published numbers: {table['paper_dataset']}.",
        "",
        "| setting | metric | paper (official release) | public PyTorch port | this run |",
        "|---|---|---|---|---|",
    ]
    for row in table["rows"]:
        mine = "—" if row["this_run"] is None else f"**{row['this_run']:.1f}**"
        lines.append(
            f"| {row['setting_name']} | {METRIC_NAMES[row['metric']]} | {row['paper']:.1f} | "
            f"{row['port']:.1f} | {mine} |"
        )
    lines += ["", "Sources:", ""]
    lines += [f"- {name}: {text}" for name, text in table["sources"].items()]
    if extra:
        lines += ["", *extra]
    return "\n".join(lines) + "\n"
