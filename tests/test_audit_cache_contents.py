"""``refinv audit --resume`` with cache files that are readable but hold other contents (a
file of another unit, a per-sample list cut short, strings where numbers go, arrays of
another shape): each such unit is recomputed, and the report equals an uninterrupted one
(before, a KeyError or IndexError ended the audit)."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from test_audit import _comparable, files  # noqa: F401 - the module's fixture

pytest.importorskip("sklearn")
pytest.importorskip("skimage")
pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

import refinv  # noqa: E402
import refinv.audit.core as core  # noqa: E402

KW = dict(masks=["random:0.3"], methods=["blind", "known"], solver={"max_iter": 20},
          n_bootstrap=20, stability_n=2, progress=False)  # fmt: skip


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _first(cache, kind):
    return sorted(cache.glob(f"{kind}-*.npz"))[0]


def _entry_edit(path, edit):
    with np.load(path) as z:
        a = {k: z[k] for k in z.files}
    entry = json.loads(str(a["entry"]))
    edit(entry)
    a["entry"] = np.array(json.dumps(entry))
    return _npz(**a)


EDITS = {
    "run holds a control file": lambda c: _first(c, "control").read_bytes(),
    "run holds no arrays": lambda c: _npz(),
    "run mse list cut short": lambda c: _entry_edit(
        _first(c, "run"), lambda e: e.update(mse=e["mse"][:-1])
    ),
    "run psnr as strings": lambda c: _entry_edit(
        _first(c, "run"), lambda e: e.update(psnr=[str(v) for v in e["psnr"]])
    ),
    "run rate changed": lambda c: _entry_edit(
        _first(c, "run"), lambda e: e.update(accurate_rate=1.5)
    ),
    "run entry is a list": lambda c: _npz(entry=np.array("[1, 2]"), x_hat=np.zeros(3)),
    "control of 2 values": lambda c: _npz(psnr=np.zeros(2)),
    "stability as text": lambda c: _npz(radius=np.array(["a", "b"])),
}
TARGET = {"run": "run", "con": "control", "sta": "stability"}


@pytest.fixture(scope="module")
def audited(files, tmp_path_factory):  # noqa: F811
    d = files
    args = (d / "ae.onnx", f"{d / 'data.npz'}:train", f"{d / 'data.npz'}:test")
    out = tmp_path_factory.mktemp("audited")
    return args, out, refinv.audit(*args, out=out, **KW)


@pytest.mark.parametrize("how", sorted(EDITS))
def test_cache_files_of_other_contents_are_recomputed(audited, tmp_path, how, monkeypatch):
    args, src, fresh = audited
    shutil.copytree(src, tmp_path / "a")
    cache = tmp_path / "a" / "cache"
    kind = TARGET[how.split()[0][:3]]
    victim = _first(cache, kind)
    victim.write_bytes(EDITS[how](cache))
    calls = []
    real = core.evaluate_split
    monkeypatch.setattr(core, "evaluate_split", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    again = refinv.audit(*args, out=tmp_path / "a", resume=True, **KW)
    assert again["timing"]["cached_units"] == (len(list(cache.glob("*.npz"))) - 1)
    assert len(calls) == (1 if kind == "run" else 0)
    assert _comparable(again) == _comparable(fresh)
