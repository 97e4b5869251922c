"""medtune.tuning."""
