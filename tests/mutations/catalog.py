"""The mutations `python -m tests.mutations` applies, one at a time, each with the tests that must
catch it.

A mutation replaces `old`, a snippet that occurs exactly once in `file`, by `new`: a small change
of the library's math that a correct test must notice. `tests` are pytest node ids (or files),
run in a copy of the repository while the mutation is in place. Keep the selection narrow: the
tests that state the property the snippet implements. When the library's code moves, update the
snippet: the runner and tests/project/test_mutation_catalog.py fail on one that no longer
matches exactly once.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutation:
    id: str
    kind: str  # what it breaks, for the summary
    file: str  # relative to the repository root, under jaxformer/
    old: str  # occurs exactly once in `file`
    new: str
    tests: tuple[str, ...]


def _m(id, kind, file, old, new, *tests):
    return Mutation(id, kind, f"jaxformer/{file}", old, new, tuple(tests))


ATTENTION = "tests/nn/test_attention.py"
SPARSE = "tests/nn/test_sparse_attention.py"
NORMS = "tests/nn/test_norms_ffn.py"
BLOCK = "tests/nn/test_block_norms.py"
DROPOUT = "tests/nn/test_dropout.py"
POSITIONS = "tests/nn/test_positions.py"
BUCKETS = "tests/nn/test_relative_position.py"
LOSS = "tests/train/test_train_loss.py"
MOE = "tests/nn/test_moe.py"
BEAMS = ("tests/interop/test_beam_search_hf.py::"
         "test_decoder_only_prompts_of_unequal_length_match_hf_one_by_one")
LORA = "tests/finetune/test_lora.py"
QUANT = "tests/finetune/test_quantization.py"
SAMPLING = "tests/generate/test_generate_sampling.py"
CASCADE = "tests/cascade/test_cascade.py"
DECODER = "tests/models/test_decoder.py"
TASK_LOSSES = "tests/tasks/test_task_losses.py"

MUTATIONS: list[Mutation] = [
    # --- attention masks ---
    _m("mask-causal-direction", "attention mask", "nn/attention_ops.py",
       "mask &= distance >= 0", "mask &= distance <= 0",
       f"{ATTENTION}::test_mask_matches_loops"),
    _m("mask-sliding-window-bound", "attention mask", "nn/attention_ops.py",
       "mask &= jnp.abs(distance) < sliding_window", "mask &= jnp.abs(distance) <= sliding_window",
       f"{ATTENTION}::test_mask_matches_loops"),
    _m("mask-padding-keys", "attention mask", "nn/attention_ops.py",
       "mask &= (k_segment_ids != 0)[:, None, :]", "mask &= (k_segment_ids >= 0)[:, None, :]",
       f"{ATTENTION}::test_mask_matches_loops"),
    _m("mask-segments-apart", "attention mask", "nn/attention_ops.py",
       "mask &= q_segment_ids[:, :, None] == k_segment_ids[:, None, :]",
       "mask &= q_segment_ids[:, :, None] >= k_segment_ids[:, None, :]",
       f"{ATTENTION}::test_mask_matches_loops"),
    _m("blocked-causal-diagonal", "attention mask", "nn/attention_ops.py",
       "allowed = jnp.arange(start, end)[:, None] >= jnp.arange(end)[None, :]",
       "allowed = jnp.arange(start, end)[:, None] > jnp.arange(end)[None, :]",
       f"{ATTENTION}::test_blocked_causal_matches_naive"),
    _m("sparse-sliding-bound", "sparse pattern", "nn/sparse_attention.py",
       "return abs(d) < self.window", "return abs(d) <= self.window",
       f"{SPARSE}::test_patterns_match_their_definitions"),
    _m("sparse-strided-columns", "sparse pattern", "nn/sparse_attention.py",
       "return (abs(d) <= self.stride) | (d % self.stride == 0)",
       "return (abs(d) <= self.stride) | (j % self.stride == 0)",
       f"{SPARSE}::test_patterns_match_their_definitions"),
    _m("sparse-fixed-summary", "sparse pattern", "nn/sparse_attention.py",
       "(j % self.stride >= self.stride - self.summary)",
       "(j % self.stride > self.stride - self.summary)",
       f"{SPARSE}::test_patterns_match_their_definitions"),
    _m("sparse-global-tokens", "sparse pattern", "nn/sparse_attention.py",
       "(i < self.global_tokens) | (j < self.global_tokens)",
       "(i < self.global_tokens) | (j <= self.global_tokens)",
       f"{SPARSE}::test_patterns_match_their_definitions"),
    _m("sparse-parts-strided-band", "sparse pattern", "nn/sparse_attention.py",
       "Part(lambda i, j: c(i, j) & (abs(i - j) <= s), reach=(0 if causal else -s, s), band=True),",
       "Part(lambda i, j: c(i, j) & (abs(i - j) < s), reach=(0 if causal else -s, s), band=True),",
       f"{SPARSE}::test_chunked_equals_dense_masked_reference"),

    # --- norms and their placement ---
    _m("rmsnorm-no-eps", "norm", "nn/norms.py",
       "jnp.square(h).mean(-1, keepdims=True) + self.eps)",
       "jnp.square(h).mean(-1, keepdims=True))",
       f"{NORMS}::test_rmsnorm"),
    _m("rmsnorm-mean-abs", "norm", "nn/norms.py",
       "jnp.square(h).mean(-1, keepdims=True) + self.eps)",
       "jnp.square(h - h.mean(-1, keepdims=True)).mean(-1, keepdims=True) + self.eps)",
       f"{NORMS}::test_rmsnorm"),
    _m("layernorm-uncentred-variance", "norm", "nn/norms.py",
       "var = jnp.square(h - mean).mean(-1, keepdims=True)",
       "var = jnp.square(h).mean(-1, keepdims=True)",
       f"{NORMS}::test_layernorm"),
    _m("layernorm-eps-outside", "norm", "nn/norms.py",
       "jax.lax.rsqrt(var + self.eps)", "(jax.lax.rsqrt(var) + self.eps)",
       f"{NORMS}::test_layernorm"),
    _m("block-pre-norm-skipped", "norm placement", "nn/block.py",
       'h = norm(x) if self.norm_position == "pre" else x',
       'h = norm(x) if self.norm_position == "post" else x',
       f"{BLOCK}::test_block_matches_the_formula"),
    _m("block-post-norm-dropped", "norm placement", "nn/block.py",
       "                x = norm(x)\n", "                x = x\n",
       f"{BLOCK}::test_block_matches_the_formula"),
    _m("decoder-final-norm-skipped", "norm placement", "models/decoder/model.py",
       "            x = self.final_norm(x)\n", "            x = x\n",
       f"{BLOCK}::test_final_norm_only_for_pre_norm_stacks"),

    # --- dropout ---
    _m("dropout-scale", "dropout", "nn/dropout.py",
       "x / (1.0 - rate)", "x * (1.0 - rate)",
       f"{DROPOUT}::test_kept_values_are_scaled_and_dropped_ones_are_zero"),
    _m("dropout-keep-probability", "dropout", "nn/dropout.py",
       "jax.random.bernoulli(rng, 1.0 - rate, x.shape)", "jax.random.bernoulli(rng, rate, x.shape)",
       f"{DROPOUT}::test_kept_fraction_is_one_minus_rate"),
    _m("dropout-on-the-residual", "dropout", "nn/block.py",
       "x = x + dropout(y, self.dropout_rate, key)", "x = dropout(x + y, self.dropout_rate, key)",
       f"{DROPOUT}::test_block_drops_the_sublayer_output_before_the_residual_sum"),
    _m("dropout-attention-probabilities", "dropout", "nn/attention_ops.py",
       "weights = dropout(_masked_softmax(scores, mask, bias), dropout_rate, dropout_rng)",
       "weights = _masked_softmax(scores, mask, bias)",
       f"{DROPOUT}::test_attention_dropout_drops_probabilities_and_rescales_the_kept_ones"),

    # --- RoPE, ALiBi ---
    _m("rope-rotation-sign", "rope", "nn/positions.py",
       "[x1 * cos - x2 * sin, x2 * cos + x1 * sin]", "[x1 * cos + x2 * sin, x2 * cos - x1 * sin]",
       f"{POSITIONS}::test_rope_matches_rotate_half_reference"),
    _m("rope-theta-exponent", "rope", "nn/positions.py",
       "inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)",
       "inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / (head_dim - 2))",
       f"{POSITIONS}::test_rope_matches_rotate_half_reference"),
    _m("alibi-bias-sign", "alibi", "nn/positions.py",
       "return -alibi_slopes(num_heads)[None, :, None, None] * distance[:, None, :, :]",
       "return alibi_slopes(num_heads)[None, :, None, None] * distance[:, None, :, :]",
       f"{POSITIONS}::test_alibi_bias_is_minus_slope_times_distance"),
    _m("alibi-slopes-interleave", "alibi", "nn/positions.py",
       "extra = power_of_two(2 * lower)[0::2][: num_heads - lower]",
       "extra = power_of_two(2 * lower)[1::2][: num_heads - lower]",
       f"{POSITIONS}::test_alibi_slopes_match_paper"),
    _m("alibi-bidirectional-distance", "alibi", "nn/positions.py",
       "    if not causal:\n        distance = jnp.abs(distance)",
       "    if causal:\n        distance = jnp.abs(distance)",
       f"{POSITIONS}::test_alibi_bias_is_minus_slope_times_distance"),

    # --- losses and their labels ---
    _m("cross-entropy-max-not-logsumexp", "loss", "tasks/losses.py",
       "return jax.nn.logsumexp(logits, axis=-1) - target_logit[..., 0]",
       "return jnp.max(logits, axis=-1) - target_logit[..., 0]",
       f"{LOSS}::test_matches_numpy_and_ignores_masked_tokens"),
    _m("loss-counts-padding", "loss", "tasks/losses.py",
       "return jnp.sum(token_cross_entropy(logits, targets) * mask), jnp.sum(mask)",
       "return jnp.sum(token_cross_entropy(logits, targets) * mask), jnp.sum(jnp.ones_like(mask))",
       f"{LOSS}::test_matches_numpy_and_ignores_masked_tokens"),
    _m("label-shift-windows", "label shift", "data/windows.py",
       '"targets": np.ascontiguousarray(windows[:, 1:]),',
       '"targets": np.ascontiguousarray(windows[:, :-1]),',
       "tests/data/test_data_pipeline.py::test_windows_are_shifted_text_from_the_right_split"),
    _m("label-shift-packed", "label shift", "data/packing.py",
       '"targets": np.ascontiguousarray(row[:, 1:], dtype=np.int32),',
       '"targets": np.ascontiguousarray(row[:, :-1], dtype=np.int32),',
       "tests/data/test_data_pipeline.py::test_packed_rows_rebuild_the_documents"),
    _m("loss-mask-piece-ends", "loss mask", "data/packing.py",
       '"loss_mask": ((segment_ids != 0) & same_piece).astype(np.float32),',
       '"loss_mask": (segment_ids != 0).astype(np.float32),',
       "tests/data/test_data_pipeline.py::test_packed_rows_rebuild_the_documents"),
    _m("label-smoothing-sum", "loss", "tasks/seq2seq.py",
       "(1.0 - eps) * nll - eps * jnp.mean(log_probs, axis=-1)",
       "(1.0 - eps) * nll - eps * jnp.max(log_probs, axis=-1)",
       "tests/data/test_seq2seq_data.py::test_label_smoothing_equals_optax"),
    _m("mlm-loss-unweighted", "loss", "tasks/masked_lm.py",
       "mlm_sum, count = jnp.sum(losses * weights), jnp.sum(weights)",
       "mlm_sum, count = jnp.sum(losses), jnp.sum(weights)",
       f"{TASK_LOSSES}::test_mlm_loss_scores_only_the_masked_predictions"),
    _m("mlm-nsp-weight", "loss", "tasks/masked_lm.py",
       "total = total + jnp.sum(nsp) / n * jax.lax.stop_gradient(count)",
       "total = total + jnp.sum(nsp)",
       f"{TASK_LOSSES}::test_mlm_loss_scores_only_the_masked_predictions"),
    _m("router-z-loss-square", "loss", "nn/moe_dispatch.py",
       '"z": jnp.sum(jax.nn.logsumexp(logits, axis=-1) ** 2 * real)}',
       '"z": jnp.sum(jnp.abs(jax.nn.logsumexp(logits, axis=-1)) * real)}',
       f"{MOE}::test_auxiliary_losses_equal_a_hand_computation"),

    # --- mixture of experts: routing, capacity, auxiliary losses ---
    _m("moe-topk-softmax-unnormalised", "moe routing", "nn/moe_dispatch.py",
       "weights = jax.nn.softmax(top_logits, axis=-1)",
       "weights = jnp.take_along_axis(probs, experts, axis=-1)",
       f"{MOE}::test_experts_equal_a_naive_loop_with_ample_capacity"),
    _m("moe-softmax-topk-smallest", "moe routing", "nn/moe_dispatch.py",
       "weights, experts = jax.lax.top_k(probs, moe.top_k)",
       "weights, experts = jax.lax.top_k(-probs, moe.top_k)\n        weights = -weights",
       f"{MOE}::test_experts_equal_a_naive_loop_with_ample_capacity"),
    _m("moe-capacity-floor", "moe capacity", "nn/moe.py",
       "return max(1, math.ceil(factor * self.top_k * group / self.num_experts))",
       "return max(1, math.floor(factor * self.top_k * group / self.num_experts))",
       f"{MOE}::test_top2_slot_count"),
    _m("moe-capacity-token-major", "moe capacity", "nn/moe_dispatch.py",
       "    by_choice = jnp.swapaxes(onehot, 1, 2).reshape(b, k * t, moe.num_experts)  # choice-major\n"
       "    position = jnp.cumsum(by_choice, axis=1) - 1\n"
       "    position = jnp.swapaxes(position.reshape(b, k, t, moe.num_experts), 1, 2)\n",
       "    by_choice = onehot.reshape(b, t * k, moe.num_experts)  # token-major\n"
       "    position = jnp.cumsum(by_choice, axis=1) - 1\n"
       "    position = position.reshape(b, t, k, moe.num_experts)\n",
       f"{MOE}::test_top2_capacity_drops_by_hand"),
    _m("moe-capacity-one-extra-slot", "moe capacity", "nn/moe_dispatch.py",
       "keep = (slot < capacity) & token_mask[..., None]",
       "keep = (slot <= capacity) & token_mask[..., None]",
       f"{MOE}::test_switch_capacity_drops_tokens_and_they_pass_through_the_residual"),
    _m("moe-capacity-counts-padding", "moe capacity", "nn/moe_dispatch.py",
       "onehot = jax.nn.one_hot(experts, moe.num_experts, dtype=jnp.int32) * token_mask[..., None, None]",
       "onehot = jax.nn.one_hot(experts, moe.num_experts, dtype=jnp.int32)",
       MOE),
    _m("moe-aux-loss-num-experts", "moe aux loss", "nn/moe.py",
       '"load_balancing_loss": self.aux_loss_coef * self.num_experts * jnp.sum(f * p)',
       '"load_balancing_loss": self.aux_loss_coef * jnp.sum(f * p)',
       f"{MOE}::test_auxiliary_losses_equal_a_hand_computation"),
    _m("moe-z-loss-coef", "moe aux loss", "nn/moe.py",
       '"router_z_loss": self.z_loss_coef * sums["z"] / n}',
       '"router_z_loss": self.aux_loss_coef * sums["z"] / n}',
       f"{MOE}::test_auxiliary_losses_equal_a_hand_computation"),

    # --- beam search ---
    _m("beam-length-penalty-off-by-one", "beam scoring", "generate/beam_search.py",
       "penalty = np.asarray([n ** s.length_penalty for n in range(1, new + 1)], np.float32)",
       "penalty = np.asarray([(n + 1) ** s.length_penalty for n in range(1, new + 1)], np.float32)",
       BEAMS),
    _m("beam-early-stopping-any", "beam scoring", "generate/beam_search.py",
       'full = jnp.all(c["is_finished"], axis=1, keepdims=True) & stop_when_full',
       'full = jnp.any(c["is_finished"], axis=1, keepdims=True) & stop_when_full',
       BEAMS),
    _m("beam-finished-outside-top-beams", "beam scoring", "generate/beam_search.py",
       "just_finished = ends & jnp.asarray(top_num_beams)", "just_finished = ends",
       BEAMS),
    _m("beam-never-best-length", "beam scoring", "generate/beam_search.py",
       "best_length = ((np.full(new, new) if", "best_length = ((np.full(new, 1) if",
       BEAMS),

    # --- LoRA ---
    _m("lora-scaling-alpha-only", "lora", "nn/lora.py",
       "self.scaling = 1.0 if num_adapters else self.alpha / rank",
       "self.scaling = 1.0 if num_adapters else self.alpha",
       f"{LORA}::test_update_matches_a_naive_formula_on_a_multi_axis_kernel"),
    _m("lora-merge-unscaled", "lora", "nn/lora.py",
       "return (self.scaling * (a2 @ b2)).reshape(*lead, *self.in_shape, *self.out_shape)",
       "return (a2 @ b2).reshape(*lead, *self.in_shape, *self.out_shape)",
       f"{LORA}::test_zero_b_equals_base_and_merge_unmerge_round_trips"),

    _m("lora-stacked-scaling-dropped", "lora", "finetune/lora.py",
       "b[rows] = np.asarray(w.b, np.float32) * w.scaling", "b[rows] = np.asarray(w.b, np.float32)",
       "tests/finetune/test_mixed_adapters.py::test_each_row_equals_its_adapter_alone"),
    _m("lora-stacked-base-rows", "lora", "nn/lora.py",
       "y = jnp.where((ids >= 0)[:, None, None], y, 0.0)", "y = jnp.where((ids > 0)[:, None, None], y, 0.0)",
       "tests/finetune/test_mixed_adapters.py::test_each_row_equals_its_adapter_alone"),

    # --- quantization ---
    _m("int8-scale-128", "quantization", "nn/qformats.py",
       "scale = _absmax(w, -2) / 127.0  # [..., 1, out]", "scale = _absmax(w, -2) / 128.0  # [..., 1, out]",
       f"{QUANT}::test_int8_per_channel_error_within_half_a_step"),
    _m("int4-scale-8", "quantization", "nn/qformats.py",
       "scale = _absmax(groups, -2) / 7.0  # [..., in / g, 1, out]",
       "scale = _absmax(groups, -2) / 8.0  # [..., in / g, 1, out]",
       f"{QUANT}::test_int4_groupwise_error_within_half_a_step"),
    _m("int4-offset", "quantization", "nn/qformats.py",
       "jnp.clip(jnp.round(groups / _safe(scale)), -7, 7).astype(jnp.int32) + 8",
       "jnp.clip(jnp.round(groups / _safe(scale)), -7, 7).astype(jnp.int32) + 7",
       f"{QUANT}::test_int4_groupwise_error_within_half_a_step"),
    _m("nf4-round-up", "quantization", "nn/qformats.py",
       "midpoints = (values[1:] + values[:-1]) / 2", "midpoints = values[:-1]",
       f"{QUANT}::test_nf4_error_bound_and_double_quantized_scales"),
    _m("nf4-block-size", "quantization", "nn/qformats.py",
       "return quantize_nf4(w, group_size)", "return quantize_nf4(w, 2 * group_size)",
       QUANT),
    _m("nf4-double-quant-scale", "quantization", "nn/qformats.py",
       "scale = _absmax(blocks, -1) / 127.0  # [..., n_blocks2, 1]",
       "scale = _absmax(blocks, -1) / 127.0 * 2  # [..., n_blocks2, 1]",
       f"{QUANT}::test_nf4_error_bound_and_double_quantized_scales"),

    # --- T5 relative position buckets ---
    _m("t5-bucket-direction", "t5 buckets", "nn/relative_position.py",
       "buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets",
       "buckets = buckets + (relative_position >= 0).astype(jnp.int32) * num_buckets",
       f"{BUCKETS}::test_buckets_equal_hf"),
    _m("t5-bucket-max-exact", "t5 buckets", "nn/relative_position.py",
       "max_exact = num_buckets // 2", "max_exact = num_buckets // 4",
       f"{BUCKETS}::test_buckets_equal_hf"),
    _m("t5-bucket-causal-side", "t5 buckets", "nn/relative_position.py",
       "distance = -jnp.minimum(relative_position, 0)", "distance = jnp.maximum(relative_position, 0)",
       f"{BUCKETS}::test_buckets_equal_hf"),
    _m("t5-bucket-log-range", "t5 buckets", "nn/relative_position.py",
       "/ math.log(max_distance / max_exact)", "/ math.log(max_distance)",
       f"{BUCKETS}::test_buckets_equal_hf"),

    # --- KV cache ---
    _m("kv-cache-values-from-keys", "kv cache", "nn/kv_cache.py",
       "v=cache.v.at[rows, :, positions].set(v.astype(cache.v.dtype)),",
       "v=cache.v.at[rows, :, positions].set(k.astype(cache.v.dtype)),",
       f"{DECODER}::test_kv_cache_reproduces_full_forward"),
    _m("kv-cache-segments-all-real", "kv cache", "nn/kv_cache.py",
       "segment_ids.astype(jnp.int32)))", "jnp.ones_like(segment_ids, jnp.int32)))",
       "tests/nn/test_kv_cache.py::test_write_puts_each_token_in_its_position_slot"),
    _m("kv-cache-reorder-axis", "kv cache", "nn/kv_cache.py",
       "jnp.take(getattr(node, name), indices, axis=axis)", "jnp.take(getattr(node, name), indices, axis=0)",
       "tests/nn/test_cross_attention.py::test_reorder_takes_rows_along_each_declared_batch_axis"),

    # --- sampling ---
    _m("sampling-temperature-multiplies", "sampling", "generate/sampling.py",
       "logits = logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)",
       "logits = logits.astype(jnp.float32) * jnp.asarray(temperature, jnp.float32)",
       f"{SAMPLING}::test_frequencies_match_the_softmax"),
    _m("sampling-top-k-drops-kth", "sampling", "generate/sampling.py",
       "return jnp.where(logits >= kth, logits, _NEG_INF)", "return jnp.where(logits > kth, logits, _NEG_INF)",
       SAMPLING),
    _m("sampling-top-p-mass-includes-self", "sampling", "generate/sampling.py",
       "mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs",
       "mass_before = jnp.cumsum(sorted_probs, axis=-1)",
       f"{SAMPLING}::test_top_p_keeps_exactly_the_nucleus"),
    _m("sampling-top-k-then-top-p-ignores-p", "sampling", "generate/sampling.py",
       "cutoff = jnp.maximum(_nucleus_cutoff(top_values, p), top_values[..., -1:])",
       "cutoff = jnp.minimum(_nucleus_cutoff(top_values, p), top_values[..., -1:])",
       f"{SAMPLING}::test_top_k_then_top_p_order_matches_hf"),

    # --- cascades ---
    _m("cascade-threshold-strict", "cascade", "cascade/core.py",
       "accept = undecided & (scores[model] >= threshold)",
       "accept = undecided & (scores[model] > threshold)",
       f"{CASCADE}::test_a_score_equal_to_its_threshold_is_accepted"),
    _m("cascade-cost-last-model-only", "cascade", "cascade/core.py",
       "spent = np.cumsum(costs[models])[stopped]", "spent = costs[models][stopped]",
       f"{CASCADE}::test_replay_matches_a_naive_loop"),
    _m("cascade-budget-strict", "cascade", "cascade/core.py",
       "if outcome.cost > budget:", "if outcome.cost >= budget:",
       CASCADE),
    _m("cascade-ties-to-the-dearer", "cascade", "cascade/core.py",
       "(outcome.accuracy == best[1].accuracy and outcome.cost < best[1].cost)",
       "(outcome.accuracy == best[1].accuracy and outcome.cost > best[1].cost)",
       f"{CASCADE}::test_ties_in_accuracy_go_to_the_cheaper_policy"),
    _m("cascade-live-cost-overwritten", "cascade", "cascade/lm.py",
       "spent[pending] += stage.cost", "spent[pending] = stage.cost",
       f"{CASCADE}::test_live_cascade_equals_the_simulation_it_was_learned_on"),

    # --- the accelerators' attention, run on the CPU under compute_as ---
    _m("accelerator-xla-causal-dropped", "accelerator attention", "nn/attention.py",
       "is_causal=causal and mask is None), None", "is_causal=False), None",
       "tests/nn/test_accelerator_paths.py::test_xla_module_path_on_accelerators"),
    _m("accelerator-cudnn-window-one-wider", "accelerator attention", "nn/attention_kernels.py",
       "window = (case.pattern.window - 1, 0)", "window = (case.pattern.window, 0)",
       "tests/nn/test_accelerator_paths.py::test_cudnn_call_for_bfloat16_on_a_gpu"),
    _m("accelerator-splash-pattern-diagonal", "accelerator attention", "nn/attention_kernels.py",
       "pattern.allowed(i, j) & ((i >= j) if causal else True)",
       "pattern.allowed(i, j) & ((i > j) if causal else True)",
       "tests/nn/test_accelerator_paths.py::test_splash_is_what_auto_runs_on_a_tpu"),
    _m("accelerator-splash-local-window", "accelerator attention", "nn/attention_kernels.py",
       "one = sm.LocalMask(shape, (p.window - 1, 0 if case.causal else p.window - 1), offset=0)",
       "one = sm.LocalMask(shape, (p.window, 0 if case.causal else p.window), offset=0)",
       "tests/nn/test_accelerator_paths.py::test_splash_is_what_auto_runs_on_a_tpu"),

    # --- preference losses ---
    _m("dpo-label-smoothing-sign", "preference loss", "tasks/preference.py",
       "- label_smoothing * jax.nn.log_sigmoid(-beta * h))",
       "+ label_smoothing * jax.nn.log_sigmoid(-beta * h))",
       "tests/tasks/test_preference_losses.py::test_dpo_losses_equal_the_formulas"),
    _m("dpo-ipo-target", "preference loss", "tasks/preference.py",
       "return (h - 1.0 / (2.0 * beta)) ** 2", "return (h - 1.0 / beta) ** 2",
       "tests/tasks/test_preference_losses.py::test_dpo_losses_equal_the_formulas"),
    _m("gae-no-lambda", "preference loss", "tasks/preference.py",
       "advantage = (delta + gamma * lam * carry) * keep", "advantage = (delta + gamma * carry) * keep",
       "tests/tasks/test_preference_losses.py"),
    _m("ppo-clip-one-sided", "preference loss", "tasks/preference.py",
       "losses = jnp.maximum(-a * ratio, -a * jnp.clip(ratio, 1.0 - clip, 1.0 + clip))",
       "losses = -a * ratio",
       "tests/tasks/test_preference_losses.py::test_clipped_policy_gradient_is_zero_outside_the_clip_range"),

    # --- imports ---
    _m("mixtral-window-dropped", "import", "interop/mixtral.py",
       'sliding_window=hf.get("sliding_window"),', "sliding_window=None,",
       "tests/models/test_mixtral.py::test_sliding_window_matches_hf"),
    _m("image-to-text-key-value-swapped", "import", "interop/vision_encoder_decoder.py",
       'attention, "kernel", H, hd,\n                  parts=("key", "value")),',
       'attention, "kernel", H, hd,\n                  parts=("value", "key")),',
       "tests/models/test_image_to_text_hf.py::test_import_matches_hf"),
]
