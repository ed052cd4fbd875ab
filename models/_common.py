"""Shared helpers for the training scripts in ``models/`` (they import torch; refinv never does)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
ONNX_DIR = HERE / "onnx"
MANIFEST = HERE / "MANIFEST.json"
OPSET = 17
STATUS_FILE = Path(os.environ.get("REFINV_MODELS_STATUS", "/tmp/models_status.txt"))


def torch_setup(seed: int):
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return torch


def load(name: str):
    with np.load(DATA / f"{name}.npz", allow_pickle=False) as z:
        return z["train"].copy(), z["test"].copy()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rel(path: Path) -> str:
    return str(Path(path).resolve().relative_to(HERE))


def export(model, example, path: Path, in_name="x", out_name="y"):
    """Legacy (TorchScript) ONNX export, opset 17, one file, dynamic batch axis.

    Checks onnxruntime against torch on ``example`` and returns the max abs diff.
    """
    import onnx
    import onnxruntime as ort
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example[:2],),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[in_name],
            output_names=[out_name],
            dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}},
        )
        ref = model(example).numpy()
    fix_output_shape(path, ref.shape[1:], out_name)
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    assert not any(
        init.data_location == onnx.TensorProto.EXTERNAL for init in m.graph.initializer
    ), "external data"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {in_name: example.numpy().astype(np.float32)})[0]
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref)))


def fix_output_shape(path: Path, sample_shape, out_name="y") -> bool:
    """Declare the output as (batch, *sample_shape): the legacy exporter leaves the dims
    after a Reshape unnamed/symbolic. Idempotent; returns True if the file changed."""
    import onnx

    m = onnx.load(str(path))
    (out,) = [o for o in m.graph.output if o.name == out_name]
    dims = out.type.tensor_type.shape.dim
    want = ["batch", *[int(d) for d in sample_shape]]
    have = [d.dim_param or d.dim_value for d in dims]
    if have == want:
        return False
    assert len(dims) == len(want), (have, want)
    dims[0].dim_param = "batch"
    for d, v in zip(dims[1:], want[1:], strict=True):
        d.dim_value = v
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return True


def ort_run(path: Path, x: np.ndarray, in_name="x") -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {in_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def ort_mse(path: Path, x: np.ndarray, target: np.ndarray | None = None) -> float:
    y = ort_run(path, x)
    t = x if target is None else target
    return float(np.mean((y.astype(np.float64) - t.astype(np.float64)) ** 2))


def n_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def attractor_fraction(model, x: np.ndarray, max_images: int | None = None):
    """Fraction of images x_i with spectral radius of the Jacobian of f at x_i < 1.

    Jacobian by ``torch.autograd.functional.jacobian`` on a float64 copy of the
    model (same weights), eigenvalues by ``torch.linalg.eigvals``.
    Returns (fraction, list of spectral radii).
    """
    import copy

    import torch

    m = copy.deepcopy(model).double().eval()
    shape = x.shape[1:]
    radii = []
    xs = x if max_images is None else x[:max_images]
    for xi in xs:
        v = torch.from_numpy(xi.astype(np.float64)).reshape(-1)

        def f(u):
            return m(u.reshape(1, *shape)).reshape(-1)

        J = torch.autograd.functional.jacobian(f, v, vectorize=True)
        radii.append(float(torch.linalg.eigvals(J).abs().max()))
    r = np.asarray(radii)
    return float(np.mean(r < 1.0)), [round(float(v), 6) for v in r]


def update_manifest(entries: dict):
    """Merge ``entries`` (file -> record) into MANIFEST.json, adding sha256 and size."""
    import fcntl

    lock = open("/tmp/refinv_models_manifest.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    man = {}
    if MANIFEST.exists():
        man = json.loads(MANIFEST.read_text())
    files = man.setdefault("files", {})
    for key, rec in entries.items():
        p = HERE / key
        rec = dict(rec)
        rec["sha256"] = sha256(p)
        rec["size_bytes"] = p.stat().st_size
        files[key] = rec
    man["files"] = dict(sorted(files.items()))
    man.setdefault(
        "about",
        "Provenance of every file under models/ (see models/README.md). Paths are relative "
        "to models/. train_mse is measured with onnxruntime (CPUExecutionProvider, float32) "
        "on the shipped training set after export, as mean over all pixels of the squared error.",
    )
    tmp = MANIFEST.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(man, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, MANIFEST)
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()


def status(line: str):
    with open(STATUS_FILE, "a") as f:
        f.write(time.strftime("%H:%M:%S ") + line.rstrip() + "\n")
