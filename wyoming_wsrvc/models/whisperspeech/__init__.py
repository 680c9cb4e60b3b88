"""WhisperSpeech inference (T2S, S2A), loading the published `.model` checkpoints."""
