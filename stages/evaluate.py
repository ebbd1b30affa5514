"""`snmn evaluate`: the trained model on the evaluation splits, set next to the paper's numbers."""

from __future__ import annotations

import click

from stages.options import params_option


@click.command(name="evaluate")
@params_option
def command(params_path: str) -> None:
    """Accuracy per type and family, P@1, layouts, faithfulness; the paper comparison."""
    from pipeline.config import load_config
    from pipeline.evaluation.evaluate import evaluate

    settings = load_config(params_path).evaluate
    results = evaluate(settings)
    shown = {
        "vqa_accuracy": results.get("vqa", {}).get("answers", {}).get("accuracy"),
        "ref_p_at_1": results.get("ref", {}).get("boxes", {}).get("p_at_1"),
        "question_only": results.get("question_only_baseline", {}).get("accuracy"),
    }
    summary = ", ".join(f"{k} {v:.4f}" for k, v in shown.items() if v is not None)
    click.echo(f"evaluate: {summary}; dataset {results['dataset']['name']}")
    click.echo(
        f"evaluate: wrote {settings.headline_path}, {settings.metrics_path} and "
        f"{settings.comparison_markdown}"
    )
