"""medtune.core_models."""
