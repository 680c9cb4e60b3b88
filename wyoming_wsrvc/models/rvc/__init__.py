"""Retrieval-based voice conversion (RVC): voice files, synthesizer, content, pitch, index."""
