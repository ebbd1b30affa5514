"""Images to ResNet conv4 features: decoding, the backbone, its pretraining, extraction, a probe.

The cell under the large cube must say "large, cube" in the features: images.py decodes and
resizes CLEVR PNGs, backbone.py is the truncated ResNet, pretrain.py trains it on the train
scenes, features.py extracts every split into shards, probe.py measures what the features know.
"""
