"""medtune.kernels."""
