"""The visual report: per-question figures of every reasoning step, and summary plots.

page.py writes the HTML report ("What color is the large cube?": Find on the cube, then
DescribeOne answering "red"); plots.py draws its figures and the summary plots for DVC.
"""
