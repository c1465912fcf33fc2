"""Attention kernels and the choice between them (`attention_impl`).

- `xla`: `jax.nn.dot_product_attention` on XLA, dense mask; on a CPU, causal self-attention runs
  `attention_ops.blocked_causal_attention` instead (query blocks against only the keys they can
  see). `einsum`: the dense computation written out (returns the weights for plots).
- `chunked`: online softmax over the live blocks of the mask in pure JAX (`chunked_attention.py`),
  O(time) memory forward and backward, block-sparse for sparse patterns. Every backend.
- `cudnn`: cuDNN's flash attention through `jax.nn.dot_product_attention(implementation="cudnn")`:
  bf16/fp16, causal or full, a left sliding window, no segment ids (the API takes padding only as
  sequence lengths) and no sparse pattern or ALiBi.
- `splash`: Pallas splash attention, the TPU kernel shipped with JAX (segment ids, causal, local
  windows; the sparse patterns as a dense numpy block mask up to `SPLASH_NUMPY_MASK_MAX` tokens).
- `pallas_gpu`: the Pallas/Triton flash attention shipped with JAX for GPUs (causal, segment ids;
  no window or pattern).
- `auto`: per backend and shape: splash on TPU, cuDNN then Pallas on GPU, chunked on CPU from
  `AUTO_CHUNKED_MIN_LEN` tokens (or for a sparse pattern), XLA below.

A kernel asked for that cannot run the case falls back to what `auto` would pick, with the reason
logged (logger "jaxformer.attention"), never silently. On a CPU the Pallas kernels run in
interpret mode (slow; that is how the tests check their numerics here). Under
`platform.compute_as("gpu" | "tpu")` a CPU makes the accelerator's choices and runs their math:
the Pallas kernels interpreted, the cuDNN call's arguments through XLA's implementation of
`jax.nn.dot_product_attention`, and the `xla` path's built-in causal mask (tests/nn/
test_accelerator_paths.py checks each against a naive reference). Splash's TPU code is checked
by compiling it for TPU slices (tests/compile/); the GPU kernels' compiled code is not run here.
"""

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.nn.chunked_attention import chunked_attention
from jaxformer.nn.kernel_sharding import per_device
from jaxformer.nn.platform import compute_platform, device_platform
from jaxformer.nn.sparse_attention import SparsePattern

IMPLEMENTATIONS = ("xla", "cudnn", "einsum", "chunked", "splash", "pallas_gpu", "auto")
AUTO_CHUNKED_MIN_LEN = 1024  # on CPU, chunked beats dense XLA from about here (bench/attention.py)
SPLASH_NUMPY_MASK_MAX = 8192  # a dense [T, T] numpy mask costs T^2 bytes at trace time

log = logging.getLogger("jaxformer.attention")
_said: set[str] = set()


def say_once(message: str, level: int = logging.INFO) -> None:
    """Log a choice once per process (attention is traced once per layer and shape)."""
    if message not in _said:
        _said.add(message)
        log.log(level, message)


@dataclasses.dataclass(frozen=True)
class Case:
    """What an uncached self-attention call needs from a kernel (all static)."""

    q_len: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    causal: bool
    pattern: SparsePattern | None
    segments: bool  # segment ids (packing or padding) given
    alibi: bool
    backend: str

    def describe(self) -> str:
        mask = ("causal" if self.causal else "full") + (f", {self.pattern.describe()}" if self.pattern else "")
        mask += ", segment ids" if self.segments else ""
        mask += ", ALiBi" if self.alibi else ""
        return f"T={self.q_len}, {self.dtype}, {mask}, on {self.backend}"


def cudnn_unsupported(case: Case) -> str | None:
    """Why cuDNN flash attention (via jax.nn.dot_product_attention) cannot run `case`, or None."""
    if case.backend != "gpu":
        return f"cuDNN needs an NVIDIA GPU (the backend is {case.backend})"
    if case.dtype not in ("bfloat16", "float16"):
        return f"cuDNN flash attention takes bfloat16/float16, not {case.dtype} (set model.dtype=bfloat16)"
    limit = 256 if _gpu_capability() >= 9.0 else 128
    if case.head_dim % 8 or case.head_dim > limit:
        return f"cuDNN needs a head dim that is a multiple of 8 and at most {limit}, not {case.head_dim}"
    if case.segments:
        return ("jax.nn.dot_product_attention passes cuDNN padding only as sequence lengths, not "
                "segment ids (packed or padded rows)")
    if case.pattern is not None and case.pattern.kind != "sliding":
        return f"cuDNN has no {case.pattern.kind} pattern"
    if case.pattern is not None and not case.causal:
        return "cuDNN's sliding window is left-only: it needs a causal mask"
    if case.alibi:
        return "ALiBi would reach cuDNN as a dense [T, T] bias"
    return None


def _gpu_capability() -> float:
    try:
        return float(jax.devices()[0].compute_capability)
    except (AttributeError, ValueError, RuntimeError):
        return 0.0


def splash_unsupported(case: Case, *, interpret_ok: bool = False) -> str | None:
    if case.backend != "tpu" and not interpret_ok:
        return f"splash attention is a TPU kernel (the backend is {case.backend})"
    block = min(128, case.q_len)
    if case.q_len % block or block % 8:
        return f"splash attention needs a length that is a multiple of 128 (or of 8 below 128), not {case.q_len}"
    if case.backend == "tpu" and case.q_len % 128:
        # Interpret mode takes shorter blocks; the TPU kernel computes keys 128 lanes at a time.
        return f"splash attention on a TPU needs a length that is a multiple of 128, not {case.q_len}"
    if case.alibi:
        return "splash attention has no ALiBi bias"
    if (case.pattern is not None and case.pattern.kind != "sliding"
            and case.q_len > SPLASH_NUMPY_MASK_MAX):
        return (f"the {case.pattern.kind} pattern reaches splash as a dense numpy mask, too large "
                f"past {SPLASH_NUMPY_MASK_MAX} tokens")
    return None


def pallas_gpu_unsupported(case: Case, *, interpret_ok: bool = False) -> str | None:
    if case.backend != "gpu" and not interpret_ok:
        return f"the Pallas flash attention kernel is for GPUs (the backend is {case.backend})"
    if case.pattern is not None:
        return f"the Pallas GPU kernel has no {case.pattern.describe()}"
    if case.alibi:
        return "the Pallas GPU kernel has no ALiBi bias"
    block = min(128, case.q_len)
    if case.q_len % block or case.q_len % min(32, case.q_len) or case.q_len % 8:
        return f"the Pallas GPU kernel needs a length that is a multiple of 128, not {case.q_len}"
    return None


def blocked_causal_here(causal: bool, backend: str) -> bool:
    """Whether the `xla` implementation runs causal self-attention as
    `attention_ops.blocked_causal_attention` (query blocks against only the keys they can see):
    on a CPU, where it measured 1.4-2.2x faster forward + backward at training shapes
    (bench/causal_attention.py). GPUs and TPUs keep `jax.nn.dot_product_attention`."""
    return causal and backend == "cpu"


def auto_choice(case: Case) -> tuple[str, str]:
    """(implementation, why) for `attention_impl=auto`."""
    if case.backend == "tpu":
        reason = splash_unsupported(case)
        return ("splash", "TPU") if reason is None else ("chunked", reason)
    if case.backend == "gpu":
        reason = cudnn_unsupported(case)
        if reason is None:
            return "cudnn", "GPU, a case cuDNN flash attention covers"
        fallback = pallas_gpu_unsupported(case)
        if fallback is None:
            return "pallas_gpu", reason
        return "chunked", f"{reason}; {fallback}"
    if case.pattern is not None and case.pattern.kind != "sliding":
        return "chunked", "a sparse pattern: only its live blocks are computed"
    if case.q_len >= AUTO_CHUNKED_MIN_LEN:
        return "chunked", f"{case.backend}, T >= {AUTO_CHUNKED_MIN_LEN}: O(T) memory, causal blocks skipped"
    how = ("blocked causal XLA attention" if blocked_causal_here(case.causal, case.backend)
           else "dense XLA attention")
    return "xla", f"{case.backend}, T < {AUTO_CHUNKED_MIN_LEN}: {how} is fastest"


def resolve(requested: str, case: Case) -> str:
    """The implementation that runs `case` when `requested` is asked for; logs auto's pick and
    every fallback with its reason."""
    if requested in ("xla", "einsum", "chunked"):
        return requested
    if requested == "auto":
        impl, why = auto_choice(case)
        say_once(f"attention_impl=auto: {impl} ({why}; {case.describe()})")
        return impl
    interpret_ok = case.backend == "cpu"
    reason = {"cudnn": cudnn_unsupported(case),
              "splash": splash_unsupported(case, interpret_ok=interpret_ok),
              "pallas_gpu": pallas_gpu_unsupported(case, interpret_ok=interpret_ok)}[requested]
    if reason is None:
        if requested != "cudnn" and case.backend == "cpu":
            say_once(f"attention_impl={requested} runs in Pallas interpret mode on the CPU (slow)")
        return requested
    impl, _ = auto_choice(case)
    say_once(f"attention_impl={requested} cannot run this case, falling back to {impl}: {reason} "
             f"({case.describe()})", logging.WARNING)
    return impl


# --- the kernels behind the names ---


def cudnn_arguments(case: Case, scale: float) -> dict:
    """The keyword arguments the cuDNN path passes to `jax.nn.dot_product_attention`.

    A sliding window of w (a query sees itself and the w - 1 keys before it; causal, checked by
    `cudnn_unsupported`) is `local_window_size=(w - 1, 0)`: JAX documents the pair as (left,
    right) keys around each query, the query itself not counted."""
    window = None
    if case.pattern is not None:
        window = (case.pattern.window - 1, 0)
    return dict(scale=scale, is_causal=case.causal, local_window_size=window)


def cudnn_attention(q, k, v, *, case: Case, scale: float):
    """cuDNN flash attention on a GPU; on other devices (`platform.compute_as("gpu")` on a CPU)
    XLA's implementation of the same call, which follows the same documented arguments."""
    implementation = "cudnn" if device_platform() == "gpu" else "xla"
    return jax.nn.dot_product_attention(q, k, v, **cudnn_arguments(case, scale),
                                        implementation=implementation)


def splash_attention(q, k, v, segment_ids, *, case: Case, scale: float):
    """Splash attention, one example at a time (vmap over the batch), one MQA kernel per key/value
    head (vmap over the kv heads), q pre-scaled (splash applies no scale); on a mesh, called per
    device inside `jax.shard_map` (nn/kernel_sharding.py)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

    interpret = device_platform() != "tpu"

    def local(q, k, v, segment_ids):
        batch, t, heads, d = q.shape
        kv = k.shape[2]
        group = heads // kv
        block = min(128, t)
        sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                              block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                              block_q_dq=block, block_kv_dq=block)
        kernel = sk.make_splash_mqa_single_device(_splash_mask(case, group), block_sizes=sizes,
                                                  interpret=interpret)
        qg = (q * scale).reshape(batch, t, kv, group, d).transpose(0, 2, 3, 1, 4)  # [b, kv, g, t, d]
        kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [b, kv, t, d]

        def one(qg, kh, vh, seg):
            ids = None if seg is None else sk.SegmentIds(q=seg, kv=seg)
            return kernel(qg, kh, vh, segment_ids=ids)

        per_head = jax.vmap(one, in_axes=(0, 0, 0, None))
        seg_axis = None if segment_ids is None else 0
        out = jax.vmap(per_head, in_axes=(0, 0, 0, seg_axis))(qg, kh, vh, segment_ids)
        return out.transpose(0, 3, 1, 2, 4).reshape(batch, t, heads, d)

    return per_device(local, q, k, v, segment_ids)


def _splash_mask(case: Case, heads: int):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    shape = (case.q_len, case.q_len)
    p = case.pattern
    if p is None:
        one = sm.CausalMask(shape) if case.causal else sm.FullMask(shape)
    elif p.kind == "sliding":
        one = sm.LocalMask(shape, (p.window - 1, 0 if case.causal else p.window - 1), offset=0)
    else:
        one = sm.NumpyMask(_dense_pattern(p, case.causal, case.q_len))
    return sm.MultiHeadMask([one] * heads)


@functools.lru_cache(maxsize=8)
def _dense_pattern(pattern: SparsePattern, causal: bool, length: int) -> np.ndarray:
    i, j = np.arange(length)[:, None], np.arange(length)[None, :]
    return np.asarray(pattern.allowed(i, j) & ((i >= j) if causal else True))


def pallas_gpu_attention(q, k, v, segment_ids, *, case: Case, scale: float):
    """JAX's Pallas (Triton) flash attention; GQA by repeating key/value heads; on a mesh, called
    per device inside `jax.shard_map` (nn/kernel_sharding.py)."""
    from jax.experimental.pallas.ops.gpu import attention as gpu_attention

    interpret = device_platform() != "gpu"

    def local(q, k, v, segment_ids):
        group = q.shape[2] // k.shape[2]
        if group > 1:
            k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
        t = q.shape[1]
        sizes = gpu_attention.BlockSizes(block_q=min(128, t), block_k=min(128, t),
                                         block_q_dkv=min(32, t), block_kv_dkv=min(32, t),
                                         block_q_dq=min(32, t), block_kv_dq=min(32, t))
        return gpu_attention.mha(q, k, v, segment_ids, sm_scale=scale, causal=case.causal,
                                 block_sizes=sizes, interpret=interpret)

    return per_device(local, q, k, v, segment_ids)


def self_attention(q, k, v, segment_ids, *, requested: str, causal: bool,
                   pattern: SparsePattern | None, scale: float, alibi_slopes=None) -> jax.Array | None:
    """Uncached self-attention with the kernel `requested` resolves to; None when that is the
    dense path (xla/einsum), which the caller runs with its explicit mask."""
    case = Case(q_len=q.shape[1], heads=q.shape[2], kv_heads=k.shape[2], head_dim=q.shape[3],
                dtype=jnp.dtype(q.dtype).name, causal=causal, pattern=pattern,
                segments=segment_ids is not None, alibi=alibi_slopes is not None,
                backend=compute_platform())
    impl = resolve(requested, case)
    if impl == "chunked":
        return chunked_attention(q, k, v, segment_ids, segment_ids, scale=scale, causal=causal,
                                 pattern=pattern, alibi_slopes=alibi_slopes)
    if impl == "cudnn":
        return cudnn_attention(q, k, v, case=case, scale=scale)
    if impl == "splash":
        return splash_attention(q, k, v, segment_ids, case=case, scale=scale)
    if impl == "pallas_gpu":
        return pallas_gpu_attention(q, k, v, segment_ids, case=case, scale=scale)
    return None
