"""The chain being built while an ONNX graph's data path is walked (the chain reader's state).

:class:`ChainBuilder` holds the layers closed so far, the open linear layer, and the two
pending transforms between the graph's current data tensor and the chain's canonical
tensor (an elementwise scale/shift, a gather); its methods fold what the per-operator rules
of :mod:`refinv.onnx._chain_rules` meet into those.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import UnsupportedGraphError
from .chain import Activation, Layer
from .loading import prod

__all__ = ["ChainBuilder", "per_channel", "scale_out_channels", "conv_inputs", "upsample"]

MAX_DIAGONAL = 8192  # features of the largest diagonal layer kept for an unabsorbed scale


class ChainBuilder:
    """Accumulates layers while the data path is walked.

    Besides the open layer, two pending transforms describe how the current data tensor
    ``t`` relates to the *canonical* tensor ``z`` that the chain computes so far (the
    output of the last layer, or the chain's input): ``t = gather(s * z + c, idx)`` on the
    flattened sample. ``pre = (s, c)`` is an elementwise affine map (a scale or shift by a
    constant written after an activation or on the input) that the next linear layer
    absorbs; ``idx`` is a permutation of the sample's entries (a layout ``Transpose``)
    that the next dense layer absorbs into its columns. Both are ``None`` when trivial.
    """

    def __init__(self, in_shape: tuple[int, ...], label: str = ""):
        self.label = label  # the model, in error messages
        self.layers: list[Layer] = []
        self.open: dict | None = None
        self.shape = in_shape  # sample shape of the canonical data tensor
        self.actual = in_shape  # sample shape of the tensor in the graph (differs under idx)
        self.pre: tuple[np.ndarray, np.ndarray] | None = None
        self.idx: np.ndarray | None = None
        self.idx_node = ""  # the Transpose that made idx (named if it cannot be absorbed)

    def open_layer(self, **kw) -> None:
        self.close(Activation("identity"))
        self.open = dict(kw, in_shape=kw.get("in_shape", self.shape))

    def close(self, act: Activation) -> None:
        if self.open is None:
            return
        o = self.open
        out_shape = o["out_shape"] if o["kind"] != "dense" and "out_shape" in o else self.shape
        self.layers.append(
            Layer(
                kind=o["kind"],
                weight=o["weight"],
                bias=o.get("bias"),
                activation=act,
                in_shape=tuple(o["in_shape"]),
                out_shape=tuple(out_shape),
                strides=tuple(o.get("strides", ())),
                pads=tuple(o.get("pads", ())),
                dilations=tuple(o.get("dilations", ())),
                group=int(o.get("group", 1)),
                output_padding=tuple(o.get("output_padding", ())),
                name=o.get("name", ""),
            )
        )
        self.open = None

    def follow(self) -> None:
        """With no pending gather the canonical tensor is the graph's tensor: take its shape,
        except while a convolution or resize layer is open (its output keeps its channel
        axis, whatever reshape or size-1 transpose the graph applies to it)."""
        if self.idx is None and (self.open is None or self.open["kind"] == "dense"):
            self.shape = self.actual

    def open_diagonal(self, s: np.ndarray, c: np.ndarray, name: str) -> None:
        """Keep ``t -> s * t + c`` as a dense diagonal layer of its own (opened)."""
        n = s.size
        if n > MAX_DIAGONAL:
            raise UnsupportedGraphError(
                f"{name}: an elementwise scale/shift that no neighbouring layer absorbs, on "
                f"{n} features (more than {MAX_DIAGONAL} for a diagonal layer)"
            )
        self.open_layer(
            kind="dense",
            weight=np.diag(s),
            bias=None if not np.any(c) else c.copy(),
            name=name + " (diagonal)",
        )

    # ------------------------------------------------ elementwise maps (scale, shift)
    def canon(self, c: Any, lbl: str) -> np.ndarray:
        """A constant broadcast to the data tensor, as a flat array over the canonical sample."""
        flat = np.broadcast_to(np.asarray(c, dtype=np.float64), (1, *self.actual)).reshape(-1)
        if self.idx is None:
            return flat.copy()
        out = np.zeros(prod(self.shape))
        out[self.idx] = flat
        if not np.array_equal(out[self.idx], flat):
            raise UnsupportedGraphError(
                f"{self.label}: {lbl}: a constant that differs between the copies of a value "
                f"replicated by {self.idx_node}"
            )
        return out

    def elementwise(self, s: np.ndarray, c: np.ndarray, name: str) -> None:
        """Apply ``t -> s * t + c`` (flat canonical arrays) to the data tensor."""
        o = self.open
        if o is None:  # after an activation or on the input: the next linear layer absorbs it
            if self.pre is None:
                self.pre = (s.copy(), c.copy())
            else:
                self.pre = (s * self.pre[0], s * self.pre[1] + c)
            return
        bias = o.get("bias")
        if o["kind"] == "dense":
            o["weight"] = s[:, None] * o["weight"]
            o["bias"] = c.copy() if bias is None else s * bias + c
            return
        sc, cc = per_channel(s, self.shape), per_channel(c, self.shape)
        if sc is not None and cc is not None and (o["kind"] != "resize" or np.all(sc == 1)):
            if o["kind"] != "resize":
                scale_out_channels(o, sc)
            o["bias"] = cc if bias is None else sc * bias + cc
            return
        self.open_diagonal(s, c, name)

    def flush_pre(self, name: str) -> None:
        """Keep a pending scale/shift as a diagonal layer (nothing absorbs it)."""
        if self.pre is not None:
            s, c = self.pre
            self.pre = None
            self.open_diagonal(s, c, name)

    # ------------------------------------------------ gathers (permutation, replication)
    def dense_inputs(self, w: np.ndarray, bias: np.ndarray | None):
        """Absorb the pending gather (a permutation or a replication) and scale/shift into a
        dense weight (out, in): ``W gather(u, idx) = W' u`` with ``W'[:, j]`` the sum of the
        columns ``k`` with ``idx[k] = j``."""
        if self.idx is not None:
            wc = np.zeros((w.shape[0], prod(self.shape)))
            np.add.at(wc, (slice(None), self.idx), w)
            w, self.idx = wc, None
            self.actual = self.shape
        if self.pre is not None:
            s, c = self.pre
            self.pre = None
            if np.any(c):
                bias = (w @ c) if bias is None else bias + w @ c
            w = w * s[None, :]
        return w, bias

    def reorder(self, new_idx: np.ndarray, new_shape: tuple[int, ...], lbl: str) -> None:
        """The data are now ``x[new_idx]`` of shape ``new_shape`` (a layout Transpose, an
        Expand or Tile): nothing pending if that is the identity, else absorbed by the last
        dense layer's rows where it can, else pending for the next dense layer (named)."""
        self.actual = new_shape
        if np.array_equal(new_idx, np.arange(new_idx.size)):
            self.idx = None
            self.follow()
        elif self.idx is None and self.gather_last_dense(new_idx, new_shape):
            self.shape = new_shape
        else:
            self.idx, self.idx_node = new_idx, lbl

    def gather_last_dense(self, idx: np.ndarray, new_shape: tuple[int, ...]) -> bool:
        """Push a gather (permutation, replication) back into the rows of the last dense
        layer (through its elementwise activation); True if done."""
        if self.pre is not None:
            self.pre = (self.pre[0][idx], self.pre[1][idx])
        o = self.open
        if o is not None:
            if o["kind"] != "dense":
                return False
            o["weight"] = o["weight"][idx]
            if o.get("bias") is not None:
                o["bias"] = o["bias"][idx]
            return True
        if not self.layers or self.layers[-1].kind != "dense":
            return False
        lay = self.layers[-1]
        act = lay.activation
        if act.name == "prelu" and np.size(act.slope) > 1:
            sl = np.broadcast_to(np.asarray(act.slope, np.float64), lay.out_shape).reshape(-1)
            act = Activation("prelu", sl[idx].reshape(new_shape))
        self.layers[-1] = dataclasses.replace(
            lay,
            weight=lay.weight[idx],
            bias=None if lay.bias is None else lay.bias[idx],
            activation=act,
            out_shape=tuple(new_shape),
        )
        return True

    def refuse_idx(self, lbl: str, what: str) -> None:
        """A pending gather that ``what`` cannot absorb: a nearest upsampling if it is a pixel
        repetition, else refused."""
        self.idx_to_resize(lbl)
        if self.idx is not None:
            raise UnsupportedGraphError(
                f"{self.label}: {self.idx_node} permutes or replicates the data (a layout "
                f"Transpose, an Expand) and {what} ({lbl}) cannot absorb that; only a dense layer "
                "after it (or before it, through elementwise nodes) can"
            )

    # ------------------------------------------------ nearest upsampling
    def open_resize(self, factors, new_shape, name: str, lbl: str) -> None:
        """Open a nearest-upsampling layer; a pending scale/shift is upsampled after it."""
        pre, self.pre, old = self.pre, None, self.shape
        self.open_layer(
            kind="resize",
            weight=np.zeros(0),
            bias=None,
            strides=tuple(factors),
            name=name,
            out_shape=tuple(new_shape),
        )
        self.shape = self.actual = tuple(new_shape)
        if pre is not None:  # nearest upsampling commutes with elementwise maps
            self.elementwise(*(upsample(p, old, factors) for p in pre), lbl)

    def idx_to_resize(self, lbl: str) -> None:
        """A pending gather that repeats every pixel (jnp.repeat: Reshape/Expand/Reshape)
        becomes a nearest-upsampling layer."""
        cs, acs = self.shape, self.actual
        if len(cs) != 3 and self.open is None and self.layers:  # reshaped since: the image shape
            last = tuple(self.layers[-1].out_shape)
            cs = last if len(last) == 3 and prod(last) == prod(cs) else cs
        if self.idx is None or len(cs) != 3 or len(acs) != 3 or cs[0] != acs[0]:
            return
        if acs[1] % cs[1] or acs[2] % cs[2]:
            return
        f = (acs[1] // cs[1], acs[2] // cs[2])
        if np.array_equal(self.idx, upsample(np.arange(prod(cs)), cs, f)):
            self.idx, self.shape = None, cs
            self.open_resize(f, acs, self.idx_node + " (pixel repetition)", lbl)


def per_channel(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``a`` (flat over the sample ``shape``) as one value per channel (axis 0), or None."""
    if len(shape) < 2:
        return None
    pc = np.asarray(a).reshape(shape[0], -1)
    return pc[:, 0].copy() if np.all(pc == pc[:, :1]) else None


def scale_out_channels(o: dict, s: np.ndarray) -> None:
    """Scale the output channels (rows) of the open linear layer ``o`` by ``s``."""
    w = o["weight"]
    if o["kind"] == "conv_transpose":  # weight (C_in, C_out/group, k...)
        grp = o.get("group", 1)
        cin, cog = w.shape[0], w.shape[1]
        w = w.reshape(grp, cin // grp, cog, *w.shape[2:])
        w = w * s.reshape(grp, 1, cog, *([1] * (w.ndim - 3)))
        w = w.reshape(cin, cog, *w.shape[3:])
    else:  # dense (out, in) and conv (out, in/group, k...): scale rows
        w = w * s.reshape(-1, *([1] * (w.ndim - 1)))
    o["weight"] = w


def conv_inputs(w, bias, b: ChainBuilder, conv: dict, out_shape, lbl: str):
    """Absorb the pending scale/shift ``b.pre`` into the input of a convolution: a per-channel
    scale multiplies the weight's input channels, a shift adds ``conv(c)`` to the bias where
    that is constant per output channel. Anything else stays a diagonal layer of its own."""
    from ..operators.linear import from_layer

    s, c = b.pre
    sc = per_channel(s, b.shape)
    pcc = None
    if sc is not None and w.ndim == 4 and np.any(c):
        lay = Layer(
            kind=conv["kind"],
            weight=w,
            bias=None,
            activation=Activation("identity"),
            in_shape=tuple(b.shape),
            out_shape=tuple(out_shape),
            strides=tuple(conv["strides"]),
            pads=tuple(conv["pads"]),
            dilations=tuple(conv["dilations"]),
            group=int(conv["group"]),
            output_padding=tuple(conv["output_padding"]),
        )
        contrib = np.asarray(from_layer(lay).forward(c.reshape(1, *b.shape)))[0]
        pcc = per_channel(contrib.reshape(-1), tuple(out_shape))
    if sc is None or w.ndim != 4 or (np.any(c) and pcc is None):
        b.pre = None
        b.open_diagonal(s, c, lbl)
        return w, bias
    grp = int(conv["group"])
    if conv["kind"] == "conv":  # weight (M, C/group, kh, kw)
        m, cg = w.shape[0], w.shape[1]
        chan = (np.arange(m) // (m // grp))[:, None] * cg + np.arange(cg)[None, :]
        w = w * sc[chan][:, :, None, None]
    else:  # conv_transpose: weight (C, M/group, kh, kw)
        w = w * sc[:, None, None, None]
    if pcc is not None:
        bias = pcc if bias is None else bias + pcc
    b.pre = None
    return w, bias


def upsample(flat: np.ndarray, shape, factors) -> np.ndarray:
    """A flat array over the sample ``shape`` (C, H, W), each pixel repeated by ``factors``."""
    x = np.asarray(flat).reshape(shape)
    return np.repeat(np.repeat(x, factors[0], axis=1), factors[1], axis=2).reshape(-1)
