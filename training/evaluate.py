"""Evaluation: Spearman's rho per expression and their arithmetic mean (as in the paper), MAE, accuracy of the
rounded score, confusion matrix; a JSON report and plots (matplotlib, Agg backend)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.loop import spearman

N_CLASSES = 5  # scores 0-4


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float], n_classes: int = N_CLASSES) -> dict:
    y, p = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if len(y) == 0:
        return {"n": 0, "spearman": float("nan"), "mae": float("nan"), "accuracy": float("nan"),
                "confusion": []}
    yt = np.clip(np.rint(y), 0, n_classes - 1).astype(int)
    pr = np.clip(np.rint(p), 0, n_classes - 1).astype(int)
    conf = np.zeros((n_classes, n_classes), int)
    np.add.at(conf, (yt, pr), 1)
    return {"n": int(len(y)), "spearman": spearman(y, p), "mae": float(np.abs(p - y).mean()),
            "accuracy": float((yt == pr).mean()), "confusion": conf.tolist()}


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
    """predicted_vs_true.png (one panel per expression) and spearman_by_expression.png (bars per variant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    paths = []
    per = report["variants"][variant]["per_expression"]
    fig, axes = plt.subplots(1, len(per), figsize=(3.2 * len(per), 3.2), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (expr, m) in zip(axes[0], per.items(), strict=True):
        y, p = np.asarray(m["y_true"]), np.asarray(m["y_pred"])
        ax.scatter(y + rng.uniform(-0.12, 0.12, len(y)), p, s=12, alpha=0.7)
        ax.plot([0, 4], [0, 4], "k--", lw=0.8)
        ax.set_title(f"{expr}\nrho={m['spearman']:.2f} MAE={m['mae']:.2f}", fontsize=9)
        ax.set_xlabel("true severity")
        ax.set_xlim(-0.5, 4.5)
    axes[0][0].set_ylabel("predicted")
    fig.suptitle(f"{variant}: held-out simulated identities (SIMULATED - NOT FOR CLINICAL USE)", fontsize=9)
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
    ax.set_title("Spearman by expression (simulated, not for clinical use)", fontsize=9)
    fig.tight_layout()
    paths.append(out / "spearman_by_expression.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
    return paths


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path
