"""One module per norm op: its autograd Function over the Triton kernels, torch reference and public functions.

`medtune.kernels` exports the functions; nothing is re-exported here, so `medtune.kernels.ops.layer_norm` is
the module and `medtune.kernels.layer_norm` the function, however either is reached.
"""
