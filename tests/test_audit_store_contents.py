"""``refinv audit --resume`` with a store that holds other contents than refinv wrote (a
sample row deleted or of the wrong type, an array of another length or dtype, a blob that
is no array): each such unit is computed again, and the report equals an uninterrupted one."""

from __future__ import annotations

import io
import shutil
import sqlite3

import numpy as np
import pytest
from test_audit import _comparable, files  # noqa: F401 - the module's fixture

pytest.importorskip("sklearn")
pytest.importorskip("skimage")
pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

import refinv  # noqa: E402

KW = dict(masks=["random:0.3"], methods=["blind", "known"], solver={"max_iter": 20},
          n_bootstrap=20, stability_n=2, progress=False)  # fmt: skip


def _npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a))
    return buf.getvalue()


def _blob(method: str, name: str, data: bytes) -> tuple[str, tuple]:
    return ("UPDATE arrays SET data = ? WHERE name = ? AND task_id = (SELECT task_id FROM "
            "tasks WHERE method = ? ORDER BY task_id LIMIT 1)", (data, name, method))  # fmt: skip


EDITS = {  # SQL run on the store of a finished audit
    "a sample row deleted": (
        "DELETE FROM results WHERE rowid = (SELECT min(rowid) FROM results WHERE method = 'known')",
        (),
    ),
    "a psnr as text": (
        "UPDATE results SET psnr = 'high' WHERE rowid = (SELECT min(rowid) "
        "FROM results WHERE method = 'blind')",
        (),
    ),
    "estimates of another length": _blob("blind", "x_hat_all", _npy(np.zeros((2, 1, 6, 7)))),
    "estimates that are no array": _blob("blind", "x_hat_all", b"not an npy file"),
    "control inpaintings as text": _blob("control", "x_hat_all", _npy(np.array(["a"] * 5))),
    "stability radii of 1 image": _blob("stability", "radius", _npy(np.zeros(1))),
    "pixel counts as floats of another shape": _blob("known", "observed", _npy(np.zeros(2))),
}


@pytest.fixture(scope="module")
def audited(files, tmp_path_factory):  # noqa: F811
    d = files
    args = (d / "ae.onnx", f"{d / 'data.npz'}:train", f"{d / 'data.npz'}:test")
    out = tmp_path_factory.mktemp("audited")
    return args, out, refinv.audit(*args, out=out, **KW)


@pytest.mark.parametrize("how", sorted(EDITS))
def test_store_contents_refinv_did_not_write_are_recomputed(audited, tmp_path, how):
    args, src, fresh = audited
    shutil.copytree(src, tmp_path / "a")
    sql, params = EDITS[how]
    with sqlite3.connect(tmp_path / "a" / "store.sqlite") as con:
        assert con.execute(sql, params).rowcount == 1
    again = refinv.audit(*args, out=tmp_path / "a", resume=True, **KW)
    total = 2 * 2 + 2 + 2  # 2 methods x 2 splits, control per split, stability per split
    assert again["timing"]["computed_units"] == 1
    assert again["timing"]["cached_units"] == total - 1
    assert _comparable(again) == _comparable(fresh)
