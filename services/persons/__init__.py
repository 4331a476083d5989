"""The persons service; README.md says what it consumes, produces and serves."""
