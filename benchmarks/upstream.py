"""Runs inside the upstream environment (whisperspeech 0.8.9): times T2S and S2A on our model files.

Usage (called by run.py): PYTHON upstream.py MODELS_DIR T2S_TOKENS S2A_FRAMES -> JSON on stdout.
Upstream is put in inference mode as it does itself (optimize() with kv-cache), in float32, without
torch.compile, generating the same number of tokens/frames as our measurement.
"""

import json
import sys
import time

import torch
from whisperspeech.pipeline import Pipeline
from whisperspeech.s2a_delar_mup_wds_mlang import SADelARTransformer
from whisperspeech.t2s_up_wds_mlang_enclm import TSARTransformer

models, tokens, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
text = "This is a sentence of about fifty characters, or so."
out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
for size in ("tiny", "base"):
    t2s = TSARTransformer.load_model(local_filename=f"{models}/t2s-{size}.model", device="cpu")
    t2s.optimize(max_batch_size=1, dtype=torch.float32, torch_compile=False)
    t2s.generate(text, N=12, show_progress_bar=False)
    start = time.perf_counter()
    got = t2s.generate(text, N=tokens + 1, show_progress_bar=False)
    seconds = time.perf_counter() - start
    out[f"t2s_{size}"] = {"tokens": int(got.shape[-1]), "seconds": seconds}
    s2a = SADelARTransformer.load_model(local_filename=f"{models}/s2a-{size}.model", device="cpu")
    s2a.optimize(max_batch_size=1, dtype=torch.float32, torch_compile=False)
    stoks = torch.randint(0, 512, (frames // 3 + 1,))
    speaker = Pipeline.default_speaker.unsqueeze(0)
    s2a.generate(stoks[:4], speaker, N=12, show_progress_bar=False)
    start = time.perf_counter()
    s2a.generate(stoks, speaker, N=frames, show_progress_bar=False)
    out[f"s2a_{size}"] = {"frames": frames, "seconds": time.perf_counter() - start}
json.dump(out, sys.stdout)
