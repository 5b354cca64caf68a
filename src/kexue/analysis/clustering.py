"""Clustering accuracy: Hungarian (one-to-one) and Su's majority-label (many-to-one), NMI, ARI."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def contingency(clusters, labels, num_clusters: int | None = None, num_labels: int | None = None) -> np.ndarray:
    """Counts n(c, y): rows are predicted clusters, columns true labels."""
    c, y = np.asarray(clusters, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    kc = num_clusters or int(c.max()) + 1
    ky = num_labels or int(y.max()) + 1
    table = np.zeros((kc, ky), dtype=np.int64)
    np.add.at(table, (c, y), 1)
    return table


def hungarian_accuracy(clusters, labels) -> float:
    """max over one-to-one maps m of (1/N)·Σ 1[y_i = m(c_i)] (linear assignment on n(c, y))."""
    table = contingency(clusters, labels)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def majority_accuracy(clusters, labels) -> float:
    """(1/N)·Σ_c max_y n(c, y): each cluster takes its most frequent label (Su's metric)."""
    table = contingency(clusters, labels)
    return float(table.max(axis=1).sum() / table.sum())


def clustering_scores(clusters, labels) -> dict[str, float]:
    """Hungarian and majority accuracy, NMI and ARI in one dict."""
    return {
        "acc_hungarian": hungarian_accuracy(clusters, labels),
        "acc_majority": majority_accuracy(clusters, labels),
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
    }


def cluster_sizes(clusters, num_clusters: int) -> list[int]:
    """How many examples each cluster holds (to spot collapse)."""
    return np.bincount(np.asarray(clusters, dtype=np.int64), minlength=num_clusters).tolist()
