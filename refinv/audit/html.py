"""``report.html``: the audit document rendered by a Jinja2 template shipped with the package
(``templates/report.html.j2``); figures are embedded as base64 PNG, so the file is read
offline, with no network, no external CSS and no JavaScript."""

from __future__ import annotations

import base64
from importlib import resources

__all__ = ["TEMPLATE", "render_html"]

TEMPLATE = "report.html.j2"


def _pct(v) -> str:
    return "n/a" if v is None else f"{100.0 * v:.1f}%"


def _ci_pct(ci) -> str:
    return "n/a" if not ci or ci[0] is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _ci(ci, fmt: str = ".2f") -> str:
    return "n/a" if not ci or ci[0] is None else f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def _num(v, fmt: str = ".1f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _pval(p) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def render_html(doc: dict, figures: dict[str, bytes]) -> str:
    """The report as one self-contained HTML page (``figures``: name -> PNG bytes)."""
    import jinja2

    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters.update(pct=_pct, ci_pct=_ci_pct, ci=_ci, num=_num, pval=_pval)
    text = resources.files(__package__).joinpath("templates", TEMPLATE).read_text("utf-8")
    uris = {k: "data:image/png;base64," + base64.b64encode(v).decode("ascii")
            for k, v in figures.items()}  # fmt: skip
    iv = {(r["checkpoint"], r["mask"], r["method"], r["split"]): r for r in doc["intervals"]}
    rows = {}
    for r in doc["recovery"]["runs"]:
        key = (r["checkpoint"], r["mask"], r["method"])
        rows.setdefault(key, {"checkpoint": key[0], "mask": key[1], "method": key[2]})
        rows[key][r["split"]] = r
        rows[key][r["split"] + "_ci"] = iv[(*key, r["split"])]
    ctrl = {}
    for c in doc["control"]["runs"]:
        ctrl.setdefault(c["mask"], {"mask": c["mask"]})[c["split"]] = c
    label = doc["model"]
    method = doc["settings"]["primary"]["method"]
    rec_primary = {
        (r["mask"], r["split"]): r
        for r in doc["recovery"]["runs"]
        if r["checkpoint"] == label and r["method"] == method
    }
    return env.from_string(text).render(
        doc=doc,
        fig=uris,
        table=list(rows.values()),
        several=len(doc["recovery"]["checkpoints"]) > 1,
        control=list(ctrl.values()),
        rec_primary=rec_primary,
    )
