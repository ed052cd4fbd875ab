"""The audit's verdict: exact extraction, approximate extraction, or not detected (with
the power that statement has), and beside it whether membership is inferable.

Per image and setting (mask, method) an image is **extracted** when its recovery
through the model is within the threshold (MSE < 1e-7: *exactly*; MSE < 5e-4, PSNR
> 33 dB: *approximately*) AND closer to the original than the model-free control
(biharmonic inpainting of the same degraded image with the same, true, mask: a PSNR
gain > 0; PSNR above 100 dB counts as 100 dB, see :data:`GAIN_CAP_DB`). The comparison with
the control is paired: the same image and the same mask.

For every setting and both criteria, a one-sided Fisher exact test asks whether
training images are extracted more often than held-out images; Holm's adjustment runs
over all of these tests (2 x settings). The verdict is

* ``"exact"`` when some exact-criterion test is significant at the family-wise level
  ``alpha``;
* else ``"approximate"`` when some approximate-criterion test is;
* else ``"not_detected"``, stated with its power: the smallest training-image extraction
  rate that the test of the headline setting, at Holm's strictest level ``alpha / m``,
  would have detected with probability 0.8 given the held-out count observed.

Supporting evidence (not needed for the verdict): per setting, the exact sign test that
the model beats the control on more training images than not (Holm over settings).
The membership line: a permutation test of each score's AUC (Holm over the scores):
membership is inferable when one is significant, even where nothing is extracted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..evaluation.metrics import ACCURATE_MSE, APPROXIMATE_MSE
from .stats import fisher_greater, holm, min_detectable_rate, sign_test_greater

__all__ = [
    "ALPHA", "POWER", "CRITERIA", "GAIN_CAP_DB", "gain_db", "extracted", "extraction_tests",
    "gain_tests", "decide",
]  # fmt: skip

ALPHA = 0.05
POWER = 0.8
CRITERIA = (("exact", ACCURATE_MSE), ("approximate", APPROXIMATE_MSE))
# PSNR above 100 dB (MSE < 1e-10, a thousand times below the exact threshold) is counted as
# 100 dB when the model is compared with the control: beyond it differences are rounding
# noise (float32 recoveries floor near 140 dB, float64 ones near 200), not information
GAIN_CAP_DB = 100.0
LEVEL_TITLES = {
    "exact": "Exact extraction",
    "approximate": "Approximate extraction",
    "not_detected": "No extraction detected",
}


def gain_db(psnr: np.ndarray, psnr_control: np.ndarray) -> np.ndarray:
    """Per image: PSNR of the model's recovery minus the control's, both capped at
    ``GAIN_CAP_DB``."""
    cap = GAIN_CAP_DB
    return np.minimum(np.asarray(psnr, np.float64), cap) - np.minimum(
        np.asarray(psnr_control, np.float64), cap
    )


def extracted(mse: np.ndarray, psnr: np.ndarray, psnr_control: np.ndarray, threshold: float):
    """Per image: recovered within ``threshold`` (MSE) and better than the control (PSNR
    gain > 0, :func:`gain_db`). A non-finite MSE (diverged) is never extracted."""
    m = np.asarray(mse, dtype=np.float64)
    return np.isfinite(m) & (m < threshold) & (gain_db(psnr, psnr_control) > 0)


def extraction_tests(
    cols: dict, control: dict, settings: Sequence[tuple[str, str]], alpha: float = ALPHA
) -> list[dict]:
    """One Fisher test per setting and criterion, Holm-adjusted together.

    ``cols[split][(mask, method)] = (mse, psnr)`` per image; ``control[(mask, split)]`` the
    control's per-image PSNR."""
    tests = []
    for mask, method in settings:
        for criterion, thr in CRITERIA:
            k, n = {}, {}
            for split in ("train", "test"):
                mse, psnr = cols[split][(mask, method)]
                k[split] = int(extracted(mse, psnr, control[(mask, split)], thr).sum())
                n[split] = int(len(mse))
            tests.append({
                "mask": mask, "method": method, "criterion": criterion, "mse_below": thr,
                "train": {"extracted": k["train"], "n": n["train"]},
                "test": {"extracted": k["test"], "n": n["test"]},
                "p_value": fisher_greater(k["train"], n["train"], k["test"], n["test"]),
            })  # fmt: skip
    for t, a in zip(tests, holm([t["p_value"] for t in tests]), strict=True):
        t["p_adjusted"] = a
        t["significant"] = bool(a < alpha)
    return tests


def gain_tests(
    cols: dict, control: dict, settings: Sequence[tuple[str, str]], alpha: float = ALPHA
) -> list[dict]:
    """Per setting: the PSNR gain of the model over the control, per image; the exact sign
    test that it is positive on more training images than not (Holm over settings)."""
    out = []
    for mask, method in settings:
        row = {"mask": mask, "method": method}
        for split in ("train", "test"):
            g = gain_db(cols[split][(mask, method)][1], control[(mask, split)])
            k, n, p = sign_test_greater(g)
            row[split] = {"median_gain_db": float(np.median(g)) if g.size else None,
                          "beats_control": k, "n_nonzero": n}  # fmt: skip
            if split == "train":
                row["p_value"] = p
        out.append(row)
    for r, a in zip(out, holm([r["p_value"] for r in out]), strict=True):
        r["p_adjusted"] = a
        r["significant"] = bool(a < alpha)
    return out


def _pct(k: int, n: int) -> str:
    return f"{k} of {n}"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def decide(
    tests: list[dict],
    gains: list[dict],
    membership_scores: list[dict],
    primary: tuple[str, str],
    *,
    alpha: float = ALPHA,
    observed_fraction: dict | None = None,
) -> dict:
    """The verdict document from the extraction tests, the gain tests and the membership
    scores (each with ``name``, ``description``, ``auc``, ``auc_ci``, ``p_value``)."""
    level = "not_detected"
    for criterion in ("exact", "approximate"):
        if any(t["significant"] for t in tests if t["criterion"] == criterion):
            level = criterion
            break
    # the settings that carry the verdict; the headline names the first: the headline
    # setting (first mask, primary method) when it carries, then attacks that do not need
    # the true mask (blind, ae-iterations) before the known-mask one, then by p
    carried = sorted(
        (t for t in tests if t["significant"] and t["criterion"] == level),
        key=lambda t: ((t["mask"], t["method"]) != tuple(primary), t["method"] == "known",
                       t["p_adjusted"], -t["train"]["extracted"]),
    )  # fmt: skip
    m = len(tests)
    prim = {t["criterion"]: t for t in tests if (t["mask"], t["method"]) == tuple(primary)}
    pa = prim["approximate"]
    k_min, rate = min_detectable_rate(
        pa["train"]["n"], pa["test"]["extracted"], pa["test"]["n"], level=alpha / m, power=POWER
    )
    power = {
        "criterion": "approximate", "mask": primary[0], "method": primary[1],
        "level": alpha / m, "power": POWER, "n_train": pa["train"]["n"],
        "test_extracted": pa["test"]["extracted"], "n_test": pa["test"]["n"],
        "min_train_extracted": k_min, "min_detectable_rate": rate,
    }  # fmt: skip
    # membership line
    mp = holm([s["p_value"] for s in membership_scores])
    mem_tests = [
        {"score": s["name"], "auc": s["auc"], "auc_ci": s["auc_ci"], "p_value": s["p_value"],
         "p_adjusted": a, "significant": bool(a < alpha), "n_members": s["n_members"],
         "n_nonmembers": s["n_nonmembers"]}
        for s, a in zip(membership_scores, mp, strict=True)
    ]  # fmt: skip
    inferable = [t for t in mem_tests if t["significant"]]
    inferable.sort(key=lambda t: (t["p_adjusted"], -t["auc"]))
    desc = {s["name"]: s["description"] for s in membership_scores}
    texts = _texts(level, carried, prim, power, m, gains, inferable, mem_tests, desc,
                   observed_fraction or {})  # fmt: skip
    return {
        "level": level,
        "title": LEVEL_TITLES[level],
        "memorization_detected": level != "not_detected",
        "alpha": alpha,
        "correction": "holm",
        "n_tests": m,
        "extraction_definition": (
            "an image is extracted under a setting (mask, method) when its recovery through "
            f"the model has MSE < {ACCURATE_MSE:g} (exact) or < {APPROXIMATE_MSE:g} "
            "(approximate) AND a higher PSNR than the model-free control on the same degraded "
            "image with the same mask"
        ),
        "tests": tests,
        "carried_by": [
            {k: t[k] for k in ("mask", "method", "criterion", "train", "test", "p_adjusted")}
            for t in carried
        ],
        "gain_over_control": gains,
        "power": power,
        "membership_inferable": bool(inferable),
        "membership_tests": mem_tests,
        **texts,
    }


def _texts(level, carried, prim, power, m, gains, inferable, mem_tests, desc, observed) -> dict:
    def setting(t):
        return f"mask {t['mask']}, {t['method']} recovery"

    def obs(t):
        f = observed.get(t["mask"])
        return f" from {100 * f:.0f}% of their pixels" if f is not None else ""

    if level != "not_detected":
        t = carried[0]
        what = ("exactly (MSE < 1e-7)" if level == "exact"
                else "approximately (MSE < 5e-4, PSNR > 33 dB)")  # fmt: skip
        headline = (
            f"{LEVEL_TITLES[level]}: {_pct(t['train']['extracted'], t['train']['n'])} training "
            f"images were recovered {what}{obs(t)} and closer to the original than a generic "
            f"inpainter gets, against {_pct(t['test']['extracted'], t['test']['n'])} held-out "
            f"images ({setting(t)}; Holm-adjusted p = {_p(t['p_adjusted'])})."
        )
        others = [f"{c['mask']}/{c['method']} (p = {_p(c['p_adjusted'])})" for c in carried]
        summary = (
            f"This model memorized training images: {len(carried)} of the "
            f"{m // 2} settings tried extract training images {what.split(' (')[0]} "
            f"significantly more often than held-out images (one-sided Fisher exact tests, "
            f"Holm-adjusted over all {m} tests at family-wise level 0.05): "
            f"{', '.join(others)}."
        )
        if level == "approximate":
            summary += (
                " No setting extracts them exactly (MSE < 1e-7) more often than held-out "
                "images; approximate copies are what an attacker gets."
            )
    else:
        pa = prim["approximate"]
        headline = (
            f"{LEVEL_TITLES[level]}: {_pct(pa['train']['extracted'], pa['train']['n'])} "
            f"training and {_pct(pa['test']['extracted'], pa['test']['n'])} held-out images "
            f"were recovered approximately and better than a generic inpainter ({setting(pa)})."
        )
        if power["min_detectable_rate"] is None:
            pw = (
                f"With {power['n_train']} training and {power['n_test']} held-out images "
                f"({power['test_extracted']} held-out extracted), no training-image extraction "
                f"rate could have been detected at this setting (Fisher test at level 0.05/{m}): "
                "the audit has no power here; use more images."
            )
        else:
            pw = (
                f"With {power['n_train']} training and {power['n_test']} held-out images "
                f"({power['test_extracted']} held-out extracted), an approximate-extraction rate "
                f"of {100 * power['min_detectable_rate']:.0f}% or more among training images "
                f"would have been detected with probability {power['power']:.0%} at this "
                f"setting (Fisher test at level 0.05/{m})."
            )
        summary = (
            "No setting extracts training images, exactly or approximately, significantly more "
            f"often than held-out images (one-sided Fisher exact tests, Holm-adjusted over {m} "
            f"tests). {pw} This does not prove that the model memorized nothing (see Method, "
            "assumptions and limits)."
        )
    if inferable:
        s = inferable[0]
        names = ", ".join(f"{t['score']} (AUC {t['auc']:.2f}, p = {_p(t['p_adjusted'])})"
                          for t in inferable)  # fmt: skip
        membership = (
            f"Membership is inferable: the {s['score']} score ({desc[s['score']]}) tells "
            f"training from held-out images with AUC {s['auc']:.2f} "
            f"[{s['auc_ci'][0]:.2f}, {s['auc_ci'][1]:.2f}] (one-sided permutation test, "
            f"Holm-adjusted over {len(mem_tests)} scores: {names})"
            + (", even though no training image is extracted." if level == "not_detected"
               else ".")
        )  # fmt: skip
    else:
        best = min(mem_tests, key=lambda t: t["p_adjusted"])
        membership = (
            "No membership score separates training from held-out images beyond chance "
            f"(smallest Holm-adjusted permutation p = {_p(best['p_adjusted'])}, "
            f"{best['score']}, AUC {best['auc']:.2f})."
        )
    g = next(r for r in gains if (r["mask"], r["method"]) == (prim["exact"]["mask"],
                                                              prim["exact"]["method"]))  # fmt: skip
    control = (
        f"Against the model-free control (biharmonic inpainting, same mask), recovery through "
        f"the model gains a median {g['train']['median_gain_db']:+.1f} dB on training images "
        f"and {g['test']['median_gain_db']:+.1f} dB on held-out images ({setting(prim['exact'])}"
        f"); it beats the control on {g['train']['beats_control']} of "
        f"{g['train']['n_nonzero']} training images (exact sign test, Holm-adjusted p = "
        f"{_p(g['p_adjusted'])})."
    )
    return {"headline": headline, "summary": summary, "membership": membership,
            "control": control}  # fmt: skip
