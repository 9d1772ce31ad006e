"""The evaluation report as a table a person reads (`app/evaluate.py` makes the report)."""

from __future__ import annotations

from typing import Any


def format_table(report: dict[str, Any]) -> str:
    """A short human-readable table of the report."""
    lines = [
        f"{report['split']}: {report['pieces']} pieces, {report['tokens']} tokens, "
        f"{report['bits_per_token']:.4f} bits/token"
    ]
    by_kind = report["bits_per_token_by_kind"]
    lines.append(
        "  by kind: "
        + ", ".join(
            f"{k} {v:.3f} ({report['tokens_by_kind'][k]})" for k, v in by_kind.items() if v is not None
        )
    )
    lines.append(f"{'statistic':<22}{'samples':>16}{report['split']:>16}{'distance':>10}")
    for name, test in report["test_stats"].items():
        sample = (report["sample_stats"] or {}).get(name) or {}
        distance = (report["stat_distance"] or {}).get(name)
        lines.append(
            f"{name:<22}{_mean_std(sample):>16}{_mean_std(test):>16}"
            f"{'' if distance is None else f'{distance:.3f}':>10}"
        )
    return "\n".join(lines)


def _mean_std(entry: dict[str, Any]) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:.3f}±{entry['std']:.3f}"
