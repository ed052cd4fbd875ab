"""Sphinx configuration: API reference from docstrings, executed tutorial gallery."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

# One BLAS thread: the tutorials multiply small matrices many times, and a
# multithreaded OpenBLAS on a shared 2-core machine was measured ~20x slower.
# Must be set before NumPy is imported (refinv imports it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import refinv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

project = "refinv"
author = "refinv developers"
release = version = refinv.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax 3 served from _static/mathjax/ of the built site (the package ships it), not
    # from a CDN: formulas render for offline readers (sets mathjax_path)
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "_templates",
    "experiments",
    "tutorials/README.txt",
    "**/GALLERY_HEADER.rst",
]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
autosummary_generate = True
autosummary_ignore_module_all = False  # the module tables list __all__
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "none"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
nitpicky = False
suppress_warnings = ["myst.header", "autosummary.import_cycle"]

html_theme = "pydata_sphinx_theme"
html_title = "refinv"
html_theme_options = {
    "navigation_with_keys": False,
    # the first pages in the top bar (short toctree titles in index.md), the rest under
    # "More": all twelve, with their long page titles, wrapped the bar to three rows at 1280 px
    "header_links_before_dropdown": 5,
}
html_static_path = ["_static"]
html_css_files = ["refinv.css"]

# Tutorials are executed on every build. REFINV_DOCS_FAST=1 (set by CI) makes
# them use fewer samples/iterations; the published figures use the defaults.
os.environ.setdefault("REFINV_NO_PROGRESS", "1")
sphinx_gallery_conf = {
    "examples_dirs": ["tutorials"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "plot_gallery": "True",
    "within_subsection_order": "FileNameSortKey",
    "matplotlib_animations": False,
    "show_memory": False,
    "remove_config_comments": True,
    # re-execute every tutorial on every build, even if its source did not
    # change: the build is the test (and fast/full outputs never mix)
    "run_stale_examples": True,
}


def _write_toplevel_table() -> None:
    """``docs/api/generated/toplevel.inc``: the names ``import refinv`` gives,
    each linked to the module page that documents it (generated, git-ignored)."""
    import inspect

    rows = []
    for name in refinv.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(refinv, name)
        if inspect.ismodule(obj):
            rows.append((name, f":py:mod:`{obj.__name__}`", "module"))
            continue
        mod = getattr(obj, "__module__", "") or ""
        if mod == "refinv.solvers._loop":
            mod = "refinv.solvers"  # documented where it is exported
        kind = "class" if inspect.isclass(obj) else "function"
        rows.append((name, f":py:obj:`{mod}.{obj.__qualname__}`", kind))
    out = [".. list-table::", "   :header-rows: 1", "", "   * - name", "     - documented as", ""]
    for name, ref, kind in rows:
        out += [f"   * - ``refinv.{name}`` ({kind})", f"     - {ref}"]
    gen = Path(__file__).resolve().parent / "api" / "generated"
    gen.mkdir(parents=True, exist_ok=True)
    text = "\n".join(out) + "\n"
    target = gen / "toplevel.inc"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


_write_toplevel_table()


def _escape_stars_in_types(app, what, name, obj, options, lines):
    """NumPy-style types such as ``shape (batch, *sample_shape)`` would start
    reST emphasis; escape the bare stars on napoleon's ``:type:``/``:rtype:`` lines."""
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if (stripped.startswith(":type ") or stripped.startswith(":rtype:")) and "*" in line:
            head, sep, body = line.partition(": ")
            lines[i] = head + sep + _esc(body)


def _esc(text: str) -> str:
    parts = text.split("``")
    for k in range(0, len(parts), 2):  # outside inline literals only
        parts[k] = parts[k].replace("\\*", "*").replace("*", "\\*")
    return "``".join(parts)


_OWN_PAGES = {
    "index",
    "models",
    "models_from_any_trainer",
    "gpu",
    "cli",
    "sweep",
    "benchmarks",
    "citing",
    "security",
    "development",
}


def _add_extra_pages(app, docname, source):
    """Top-level pages written by others (e.g. ``docs/sweep.md``) join the main
    toctree after ``cli`` when they exist, so that ``-W`` never fails on an
    orphan page and the index never points to a missing one."""
    if docname != "index":
        return
    here = Path(__file__).resolve().parent
    extra = sorted(p.stem for p in here.glob("*.md") if p.stem not in _OWN_PAGES)
    if extra:
        source[0] = source[0].replace("\ncli\n", "\ncli\n" + "".join(f"{e}\n" for e in extra), 1)


_SG_IMG = re.compile(r'(<img src="([^"]+)"[^>]*class\s*=\s*"sphx-glr-(?:single|multi)-img"[^>]*>)')


def _link_tutorial_figures(app, exc) -> None:
    """Each tutorial figure links to its PNG at full size (a click opens it, the browser
    zooms it): sphinx-gallery's ``image-sg`` has no ``:target:``, so the built pages are
    edited once, after the build."""
    if exc is not None or app.builder.format != "html":
        return
    for page in (Path(app.outdir) / "auto_examples").glob("*.html"):
        html = page.read_text(encoding="utf-8")
        if 'class="refinv-figure-link"' in html:
            continue
        new = _SG_IMG.sub(r'<a class="refinv-figure-link" href="\2">\1</a>', html)
        if new != html:
            page.write_text(new, encoding="utf-8")


def setup(app):
    app.connect("build-finished", _link_tutorial_figures)
    app.connect("autodoc-process-docstring", _escape_stars_in_types, priority=600)
    app.connect("source-read", _add_extra_pages)
