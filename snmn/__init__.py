"""Stack Neural Module Networks (Hu et al., ECCV 2018) in PyTorch: the model library.

"What color is the large cube?" → tokens → SNMN → answer logits, plus the layout the model
chose (Find, DescribeOne, NoOp…) and the attention maps on its stack. Imports only torch,
numpy and the standard library. Import from the submodules (`from snmn.model import SNMN`);
this package file imports nothing, so reading a config does not load torch.
"""
