"""Text handling: markup removal, sentence splitting and (per language) normalization."""
