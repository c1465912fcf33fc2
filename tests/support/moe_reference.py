"""Mixture of experts by hand, for the layer's tests and the expert-parallel ones: a loop over
rows, tokens and their chosen experts in float64, with the capacity rule served token by token."""

import numpy as np

D, I, E = 16, 24, 4  # model width, expert hidden width, experts


def naive(moe, x, mask=None, capacity=None):
    """Loop over rows, tokens and their chosen experts; with `capacity`, each expert of a row
    takes first choices before second choices, earlier tokens first, and at most `capacity`."""
    x = np.asarray(x, np.float64)
    w = {k: np.asarray(v, np.float64) for k, v in moe.weights().items()}
    b, t, _ = x.shape
    mask = np.ones((b, t), bool) if mask is None else np.asarray(mask)
    y = np.zeros_like(x)
    kept = np.zeros((b, t, moe.top_k), bool)
    for r in range(b):
        choices = {}
        for i in range(t):
            logits = x[r, i] @ w["router"]
            probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            top = np.argsort(-logits)[:moe.top_k]
            if moe.router_kind == "softmax_topk":
                weights = probs[top]
            else:
                weights = np.exp(logits[top] - logits[top].max())
                weights /= weights.sum()
            choices[i] = (top, weights)
        load = np.zeros(E, int)
        for choice in range(moe.top_k):
            for i in range(t):
                if not mask[r, i]:
                    continue
                e = choices[i][0][choice]
                if capacity is None or load[e] < capacity:
                    load[e] += 1
                    kept[r, i, choice] = True
        for i in range(t):
            for choice, (e, wt) in enumerate(zip(*choices[i])):
                if kept[r, i, choice]:
                    y[r, i] += wt * expert(moe, w, e, x[r, i])
    return y, kept


def expert(moe, w, e, h_in):
    """Expert e's FFN on one token, in numpy (w: the layer's weights in float64)."""
    act = {"silu": lambda h: h / (1 + np.exp(-h)),
           "relu": lambda h: np.maximum(h, 0)}[moe.activation]
    up = h_in @ w["up"][e]
    h = act(h_in @ w["gate"][e]) * up if moe.gated else act(up)
    return h @ w["down"][e]
