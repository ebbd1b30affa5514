"""Tokens and features as the model reads them: vocabularies, Parquet tables, HDF5 shards, batches.

"What color is the large cube?" becomes token ids, an answer id and the expert layout
Find → DescribeOne (tokenization.py, text.py) in one Parquet table per split; the image's ResNet
features live in HDF5 shards behind a manifest (shards.py); datasets.py joins both into batches.
"""
