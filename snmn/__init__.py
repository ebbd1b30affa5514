"""Stack Neural Module Networks (Hu et al., ECCV 2018) in PyTorch: the model library.

Imports only torch, numpy and the standard library.
"""
