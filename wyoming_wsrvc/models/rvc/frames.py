"""RVC's time grid, one place for it: content, pitch and conversion all work on 16 kHz audio in
10 ms frames (160 samples); HuBERT's features are 20 ms (320 samples) apart."""

RATE = 16_000  # Hz: what HuBERT, RMVPE, YIN and the conversion windows read
FRAME = 160  # samples: one pitch frame, half a content frame (10 ms)
CONTENT_HOP = 2 * FRAME  # samples between HuBERT features (20 ms)
