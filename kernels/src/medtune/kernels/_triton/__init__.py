"""Triton kernels and their launchers; imported only when a norm actually runs through Triton."""
