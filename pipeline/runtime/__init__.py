"""A trained SNMN at work, shared by training, evaluation, the report and the demo.

artifact.py writes and loads model.pt (the EMA weights, the config, the vocabularies);
inference.py runs batches through the model and counts hits ("red" predicted for "What color
is the large cube?", a box with IoU ≥ 0.5), summed over DDP ranks.
"""
