"""Evaluating a trained model: accuracy per question type, layouts, faithfulness, the paper's table.

"How many cubes are there?" counts towards `count`; evaluate.py scores a split, metrics.py keeps
the exact counts, faithfulness.py measures where Find / Transform / Filter attend, baseline.py is
the question-only baseline and paper.py sets the result beside the published numbers.
"""
