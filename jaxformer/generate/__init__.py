"""Generation: sampling rules and the compiled prefill + `jax.lax.scan` decoding loop.

    from jaxformer.generate import beam_search, generate
    new_tokens = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=32, temperature=0.8, top_k=40)
    best = beam_search(model, [[1, 2, 3]], max_new_tokens=32, num_beams=4, stop_tokens=[0])
"""

from jaxformer.generate.api import decode, generate, make_settings
from jaxformer.generate.beam_search import BeamOutput, BeamSettings, beam_decode, beam_search
from jaxformer.generate.loop import DecodeOutput, DecodeSettings, clear_compile_cache, trace_count
from jaxformer.generate.prompts import bucket_length
from jaxformer.generate.sliding import generate_past_context
from jaxformer.generate.sampling import greedy, sample, top_k_filter, top_p_filter

__all__ = ["BeamOutput", "BeamSettings", "DecodeOutput", "DecodeSettings", "beam_decode",
           "beam_search", "bucket_length", "clear_compile_cache", "decode", "generate",
           "generate_past_context", "greedy", "make_settings", "sample", "top_k_filter",
           "top_p_filter", "trace_count"]
