"""multitask: one wav2vec2 encoder, two heads (spoken intent, speech emotion)."""

__version__ = "0.2.0"
