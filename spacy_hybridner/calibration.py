"""Calibration of entity confidences: reliability bins and expected calibration error."""
from typing import Dict, List, Sequence, Tuple


def reliability(pairs: Sequence[Tuple[float, bool]], n_bins: int = 10) -> Dict:
    """Bin (confidence, correct) pairs by confidence.

    RETURNS (Dict): ``n_entities``; ``bins``, each with its range, count, mean
        confidence and share correct; and ``ece``, the expected calibration error
        ``sum_b n_b / N * |accuracy_b - confidence_b|`` (None without pairs).
    """
    bins: List[Dict] = []
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        members = [(c, ok) for c, ok in pairs if low <= c < high or (b == n_bins - 1 and c >= 1.0)]
        if members:
            bins.append({
                "low": low, "high": high, "count": len(members),
                "confidence": sum(c for c, _ in members) / len(members),
                "accuracy": sum(ok for _, ok in members) / len(members),
            })
    total = len(pairs)
    ece = sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins) if total else None
    return {"n_entities": total, "ece": ece, "bins": bins}
