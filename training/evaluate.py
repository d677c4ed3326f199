"""Evaluation: Spearman's rho per expression and their arithmetic mean (as in the paper), MAE, accuracy of the
rounded score, confusion matrix; a JSON report and plots (matplotlib, Agg backend)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.loop import spearman

N_CLASSES = 5  # scores 0-4

# The paper's results (Spearman rho in %), for reports to show beside a run's own (IMPLEMENTATION_NOTES).
PAPER_RHO_PCT = {
    "pfed5": {"per_expression": {"sit_at_rest": 73.30, "smile": 72.25, "frown": 79.01, "squeeze_eyes": 67.57,
                                 "clench_teeth": 67.17}, "mean": 71.86,
              "note": "TraMP-Former on PFED5, the paper's Table (test split)"},
    "toronto": {"per_expression": {}, "mean": 53.84,
                "note": "TraMP-Former on augmented Toronto NeuroFace, 3-fold subject CV (mean only)"},
}


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float], n_classes: int = N_CLASSES,
                       low: int = 0) -> dict:
    """Spearman's rho (also in %), MAE, accuracy of the rounded score and the confusion matrix on the scale
    low..low+n_classes-1 (MDS-UPDRS 0-4 by default; Toronto NeuroFace 1-5 with low=1). Rounding is half up
    as in model.scales; predictions are clipped to the scale before rounding (MAE uses them unclipped)."""
    y, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    labels = list(range(low, low + n_classes))
    if len(y) == 0:
        return {"n": 0, "spearman": float("nan"), "spearman_pct": float("nan"), "mae": float("nan"),
                "accuracy": float("nan"), "confusion": [], "labels": labels}
    yt = np.clip(np.floor(y + 0.5), low, low + n_classes - 1).astype(int) - low
    pr = np.clip(np.floor(p + 0.5), low, low + n_classes - 1).astype(int) - low
    conf = np.zeros((n_classes, n_classes), int)
    np.add.at(conf, (yt, pr), 1)
    rho = spearman(y, p)
    return {"n": int(len(y)), "spearman": rho, "spearman_pct": round(100 * rho, 2),
            "mae": float(np.abs(p - y).mean()), "accuracy": float((yt == pr).mean()), "confusion": conf.tolist(),
            "labels": labels}


def scale_metrics(y_true: Sequence[float], y_pred: Sequence[float], scale) -> dict:
    """regression_metrics on a model.scales.Scale (its own range; nothing mapped onto another scale)."""
    return {**regression_metrics(y_true, y_pred, scale.high - scale.low + 1, scale.low), "scale": scale.name}


def summarise(results: dict, meta: dict | None = None) -> dict:
    """results[variant][expression] = {"test": metrics (with y_true / y_pred), ...} -> report dict."""
    report = {**(meta or {}), "variants": {}}
    for variant, per_expr in results.items():
        rows = {e: {k: v for k, v in r["test"].items()} for e, r in per_expr.items()}
        for e, r in per_expr.items():
            rows[e]["val_best"] = r.get("val_best")
            rows[e]["train_seconds"] = r.get("train_seconds")
        rhos = [r["test"]["spearman"] for r in per_expr.values()]
        maes = [r["test"]["mae"] for r in per_expr.values()]
        accs = [r["test"]["accuracy"] for r in per_expr.values()]
        report["variants"][variant] = {"per_expression": rows, "expressions": list(per_expr),
                                       "mean_spearman": float(np.mean(rhos)),
                                       "mean_mae": float(np.mean(maes)), "mean_accuracy": float(np.mean(accs)),
                                       "train_seconds": round(sum(r.get("train_seconds") or 0
                                                                  for r in per_expr.values()), 1)}
    return report


def plot_report(report: dict, out_dir: str | Path, variant: str = "fused-tokens") -> list[Path]:
    """predicted_vs_true.png (one panel per expression), spearman_by_expression.png (bars per variant) and
    confusion.png (rounded score against the true one, per expression). Titles name the data they come from:
    `report["data_label"]` (e.g. "PFED5 test split (clinical data)"), else the simulated-data warning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    paths = []
    label = report.get("data_label") or "held-out simulated identities (SIMULATED - NOT FOR CLINICAL USE)"
    per = report["variants"][variant]["per_expression"]
    lo = min((min(m.get("labels") or [0]) for m in per.values()), default=0)
    hi = max((max(m.get("labels") or [4]) for m in per.values()), default=4)
    fig, axes = plt.subplots(1, len(per), figsize=(max(3.2 * len(per), 5.5), 3.4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (expr, m) in zip(axes[0], per.items(), strict=True):
        y, p = np.asarray(m["y_true"]), np.asarray(m["y_pred"])
        ax.scatter(y + rng.uniform(-0.12, 0.12, len(y)), p, s=12, alpha=0.7)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{expr}\nrho={m['spearman']:.2f} MAE={m['mae']:.2f}", fontsize=9)
        ax.set_xlabel("true score")
        ax.set_xlim(lo - 0.5, hi + 0.5)
    axes[0][0].set_ylabel("predicted")
    fig.suptitle(_wrap(f"{variant}: {label}", 3.2 * len(per)), fontsize=9)
    fig.tight_layout()
    paths.append(out / "predicted_vs_true.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)

    variants = list(report["variants"])
    exprs = list(per)
    fig, ax = plt.subplots(figsize=(1.6 * len(exprs) + 2, 3.2))
    w = 0.8 / len(variants)
    for i, v in enumerate(variants):
        vals = [report["variants"][v]["per_expression"].get(e, {}).get("spearman", np.nan) for e in exprs]
        ax.bar(np.arange(len(exprs)) + i * w, vals, w, label=f"{v} (mean {report['variants'][v]['mean_spearman']:.2f})")
    ax.set_xticks(np.arange(len(exprs)) + w * (len(variants) - 1) / 2, exprs, fontsize=8)
    ax.set_ylabel("Spearman rho (test)")
    ax.set_ylim(min(0, ax.get_ylim()[0]), 1)
    ax.legend(fontsize=7)
    ax.set_title(_wrap(f"Spearman by expression: {label}", 1.6 * len(exprs) + 2), fontsize=9)
    fig.tight_layout()
    paths.append(out / "spearman_by_expression.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(per), figsize=(max(3.0 * len(per), 5.5), 3.4), squeeze=False)
    for ax, (expr, m) in zip(axes[0], per.items(), strict=True):
        conf = np.asarray(m.get("confusion") or [[0]])
        labels = m.get("labels") or list(range(len(conf)))
        ax.imshow(conf, cmap="Blues")
        for (i, j), v in np.ndenumerate(conf):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted (rounded)", fontsize=8)
        ax.set_title(f"{expr} acc={m.get('accuracy', float('nan')):.2f}", fontsize=9)
    axes[0][0].set_ylabel("true", fontsize=8)
    fig.suptitle(_wrap(f"{variant} confusion: {label}", 3.0 * len(per)), fontsize=9)
    fig.tight_layout()
    paths.append(out / "confusion.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
    return paths


def _wrap(text: str, width_in: float) -> str:
    """Wrap a title to the figure's width (about 14 characters per inch at 9 pt)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, max(40, int(max(width_in, 5.5) * 14))))


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path
