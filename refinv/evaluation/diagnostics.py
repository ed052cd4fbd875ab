"""Invertibility diagnostics of a generator (Aberdam et al., 2020, Section 3).

* layer cardinalities ``s_i = ||x_i||_0`` of a forward pass (hidden layers);
* mutual coherence ``mu(W) = max_{i != j} |<w_i, w_j>| / (||w_i|| ||w_j||)``
  over the columns of each weight matrix, and of row-restricted submatrices
  ``W[S, :]`` (Definition 3: ``mu_s(W) = max_{|S| = s} mu(W_S)``; the maximum
  over all subsets is combinatorial, so we report the coherence of the
  *observed* supports ``S`` of the next layer and of random subsets of the
  same size: a lower estimate of ``mu_s``);
* the random-weight uniqueness conditions of Theorem 2, per layer:
  (iii) ``s_1 >= n_0``; (ii) ``s_i < s_{i+1}``; (i) ``s_L < n`` (fraction of
  samples meeting each);
* the coherence condition of Corollary 1, ``s_i < 1 / (3 mu_{s_{i+1}}(W_i))``,
  with the observed-support estimate of ``mu_s`` (so an optimistic check);
* tied parameters (:func:`parameter_ties`): a weight used twice (a tied
  autoencoder's ``W`` and ``W^T``) is one set of parameters, counted once.

Everything is host NumPy (these are one-off reports, not solver inner loops).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import as_generator, to_numpy
from ..onnx.graph import LayerChain

__all__ = [
    "mutual_coherence",
    "layer_cardinalities",
    "theorem2_conditions",
    "parameter_ties",
    "diagnose",
]


def mutual_coherence(W: Any, rows: Any = None) -> float:
    """Mutual coherence of the columns of ``W`` (``W[rows, :]`` if ``rows`` is given).

    Zero columns are ignored; fewer than two non-zero columns give 0.
    """
    A = np.asarray(to_numpy(W), dtype=np.float64)
    if rows is not None:
        A = A[np.asarray(rows)]
    A = A.reshape(A.shape[0], int(np.prod(A.shape[1:])))  # not -1: W may have 0 rows
    nrm = np.linalg.norm(A, axis=0)
    keep = nrm > 0
    if keep.sum() < 2:
        return 0.0
    An = A[:, keep] / nrm[keep]
    G = np.abs(An.T @ An)
    np.fill_diagonal(G, 0.0)
    return float(G.max())


def layer_cardinalities(chain: LayerChain, z: Any, *, tol: float = 0.0) -> np.ndarray:
    """``s_i = ||x_i||_0`` (entries with ``|x| > tol``) of every hidden layer: ``(batch, L)``."""
    _, hidden = chain.forward(z, return_hidden=True)
    if not hidden:
        return np.zeros((z.shape[0], 0), dtype=np.int64)
    return np.stack(
        [(np.abs(np.asarray(to_numpy(h))) > tol).sum(axis=1) for h in hidden], axis=1
    ).astype(np.int64)


def theorem2_conditions(cards: np.ndarray, n0: int, n: int) -> list[dict]:
    """Per hidden layer, the fraction of samples meeting Theorem 2's condition on it.

    ``cards``: ``(batch, L)`` cardinalities ``s_1 .. s_L``. Layer 1 must have
    ``s_1 >= n_0`` (iii) (and ``s_1 < s_2`` if ``L > 1``); a middle layer
    ``s_i < s_{i+1}`` (ii); the last hidden layer ``s_L < n`` (i).
    """
    cards = np.asarray(cards)
    L = cards.shape[1]
    out = []
    for i in range(L):
        conds = {}
        if i == 0:
            conds["s1>=n0"] = cards[:, 0] >= n0
        if i < L - 1:
            conds["s_i<s_i+1"] = cards[:, i] < cards[:, i + 1]
        if i == L - 1:
            conds["sL<n"] = cards[:, i] < n
        all_ok = np.logical_and.reduce(list(conds.values()))
        out.append(
            {
                "layer": i + 1,
                "s_mean": float(cards[:, i].mean()),
                "s_min": int(cards[:, i].min()),
                "s_max": int(cards[:, i].max()),
                **{k: float(v.mean()) for k, v in conds.items()},
                "holds": float(all_ok.mean()),
            }
        )
    return out


def parameter_ties(chain: LayerChain) -> dict:
    """Parameters shared between layers, found by content, and the count of unique ones.

    Each layer's ``weight`` and ``bias`` is compared with those of the layers
    before it: a tie is an array EQUAL to an earlier one (same shape, same
    values: one initializer used twice, as in a Conv / ConvTranspose pair) or
    the TRANSPOSE of an earlier 2-D one (a tied autoencoder's decoder ``W^T``;
    exporters often fold the transpose into a second initializer, so the
    names differ but the values do not). Constant arrays (every entry equal,
    e.g. zero biases) are never ties: two of them agree by coincidence.

    Returns ``{"n_params": unique count, "n_params_per_layer_sum": the sum over
    layers, "ties": [{"layer", "param", "tied_to_layer", "tied_to_param",
    "relation": "equal"|"transpose", "size"}]}``.
    """
    import hashlib

    def key(a: np.ndarray) -> tuple:
        a = np.ascontiguousarray(a)
        return a.shape, str(a.dtype), hashlib.sha256(a.tobytes()).hexdigest()

    seen: dict[tuple, tuple[int, str]] = {}
    ties = []
    total = unique = 0
    for i, lay in enumerate(chain.layers):
        for name, a in (("weight", lay.weight), ("bias", lay.bias)):
            if a is None:
                continue
            a = np.asarray(a)
            total += a.size
            const = a.size < 2 or bool(np.all(a == a.reshape(-1)[0]))
            hit, rel = (seen.get(key(a)), "equal") if not const else (None, "")
            if hit is None and a.ndim == 2 and not const:
                hit, rel = seen.get(key(a.T)), "transpose"
            if hit is None:
                unique += a.size
                if not const:
                    seen.setdefault(key(a), (i, name))
                continue
            ties.append(
                {"layer": i, "param": name, "tied_to_layer": hit[0], "tied_to_param": hit[1],
                 "relation": rel, "size": int(a.size)}
            )  # fmt: skip
    return {"n_params": int(unique), "n_params_per_layer_sum": int(total), "ties": ties}


def diagnose(
    chain: LayerChain,
    z: Any = None,
    *,
    n_samples: int = 64,
    n_subsets: int = 8,
    rng: int | np.random.Generator | None = 0,
) -> dict:
    """All diagnostics for ``chain`` on latents ``z`` (default ``n_samples`` draws of
    ``N(0, I)``). Returns a JSON-ready dict: per layer shapes, activation,
    coherence, submatrix coherence, cardinalities, Theorem 2 and Corollary 1 checks."""
    gen = as_generator(rng)
    if z is None:
        z = gen.standard_normal((n_samples, *chain.in_shape))
    z = np.asarray(to_numpy(z), dtype=np.float64)
    _, hidden = chain.forward(z, return_hidden=True)
    hidden = [np.asarray(to_numpy(h)) for h in hidden]
    cards = layer_cardinalities(chain, z)
    n0 = int(np.prod(chain.in_shape))
    n = int(np.prod(chain.out_shape))
    layers = []
    for i, lay in enumerate(chain.layers):
        d: dict = {
            "index": i,
            "kind": lay.kind,
            "in": list(lay.in_shape),
            "out": list(lay.out_shape),
            "activation": lay.activation.name,
            "params": int(lay.weight.size + (0 if lay.bias is None else lay.bias.size)),
            "bias": lay.bias is not None,
        }
        if lay.kind == "dense":
            W = lay.weight
            d["coherence"] = mutual_coherence(W)
            d["spectral_norm"] = float(np.linalg.norm(W, 2))
            if i < len(chain.layers) - 1 and lay.activation.name == "relu":
                sup = [np.flatnonzero(h > 0) for h in hidden[i][: min(8, len(z))]]
                obs = [mutual_coherence(W, s) for s in sup if s.size > 0]
                s_next = int(np.median([s.size for s in sup])) if sup else 0
                rnd = (
                    [
                        mutual_coherence(W, gen.choice(W.shape[0], s_next, replace=False))
                        for _ in range(n_subsets)
                    ]
                    if s_next > 1
                    else []
                )
                mu_s = max(obs + rnd) if (obs or rnd) else 0.0
                d["coherence_observed_supports"] = max(obs) if obs else None
                d["coherence_random_subsets"] = max(rnd) if rnd else None
                d["mu_s_lower_estimate"] = mu_s
                if i > 0 and mu_s > 0:  # Corollary 1 for the layer input x_i (i >= 1)
                    bound = 1.0 / (3.0 * mu_s)
                    d["corollary1_bound"] = bound
                    d["corollary1_holds"] = float(np.mean(cards[:, i - 1] < bound))
        layers.append(d)
    return {
        "n0": n0,
        "n": n,
        "samples": int(z.shape[0]),
        "layers": layers,
        "theorem2": theorem2_conditions(cards, n0, n) if cards.shape[1] else [],
    }
