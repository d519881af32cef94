"""SODA_c (Fujita et al., ECCV 2020): story-level dense-captioning score with an order-preserving matching.

Per video, predictions and references are sorted by start time; the score of pairing reference g with
prediction p is `tIoU(g, p) * METEOR(g, p)`. A dynamic program finds the order-preserving (monotone)
one-to-one matching with the largest total; precision = total / #predictions, recall = total /
#references, and the video's SODA_c is their F-measure. As in fujiso/SODA, the METEOR of a pair is the
jar's per-segment score with the *reference* as the hypothesis and the prediction as its reference
(the original passes the arguments in that order), and SODA_c is the mean F over videos.
"""

from __future__ import annotations

import numpy as np

__all__ = ["order_preserving_max_score", "soda_f_measure"]


def order_preserving_max_score(scores: np.ndarray) -> float:
    """The largest sum of `scores[i, j]` over pairs with strictly increasing i and j (each row/column used once).

    `dp[i, j] = max(dp[i-1, j], dp[i, j-1], dp[i-1, j-1] + scores[i, j])` with zeros outside the matrix;
    scores are non-negative.
    """
    rows, cols = scores.shape
    if rows == 0 or cols == 0:
        return 0.0
    dp = np.zeros((rows + 1, cols + 1))
    for i in range(rows):
        for j in range(cols):
            dp[i + 1, j + 1] = max(dp[i, j + 1], dp[i + 1, j], dp[i, j] + scores[i, j])
    return float(dp[rows, cols])


def soda_f_measure(iou: np.ndarray, meteor: np.ndarray) -> tuple[float, float, float]:
    """(precision, recall, F) of one video from its [references x predictions] tIoU and METEOR matrices."""
    n_refs, n_preds = iou.shape
    if n_refs == 0 or n_preds == 0:
        return 0.0, 0.0, 0.0
    total = order_preserving_max_score(iou * meteor)
    precision, recall = total / n_preds, total / n_refs
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f
