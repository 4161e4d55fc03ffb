"""Settings the built-in demo model runs with unless a profile, file, variable or flag says
otherwise (the layer sits right above the defaults)."""

from __future__ import annotations

from heretic.jsontypes import JsonDict

# The demo model is tiny: a short budget suffices and the search converges in tens of trials.
# Its refusal is written in the early layers (unlike the late-layer habit of large models); the
# layer profile finds that, so no search range is set here.
DEMO_LAYER: JsonDict = {
    "trials": 50,
    "startup_trials": 15,
    "max_response_tokens": 16,
    "device_map": "cpu",
    "dtype": "float32",
    "max_batch_size": 64,
}
