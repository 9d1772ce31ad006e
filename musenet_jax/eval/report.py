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
    if report.get("bits_per_note") is not None:
        lines.append(
            f"  {report['bits_per_note']:.4f} bits/note ({report['notes']} notes), "
            f"{report['bits_per_second']:.4f} bits/second ({report['seconds']:.1f} s of music)"
        )
    if report.get("bits_per_token_by_position"):
        lines.append(format_positions(report["bits_per_token_by_position"]))
    if report.get("by_composer"):
        lines.append(f"{'composer':<22}{'pieces':>8}{'bits/token':>12}{'bits/note':>12}{'bits/second':>13}")
        for name, rates in report["by_composer"].items():
            lines.append(
                f"{name:<22}{rates['pieces']:>8}{_number(rates['bits_per_token']):>12}"
                f"{_number(rates['bits_per_note']):>12}{_number(rates['bits_per_second']):>13}"
            )
    lines.append(f"{'statistic':<22}{'samples':>16}{report['split']:>16}{'distance':>10}")
    raw = []  # distances not divided by the split's spread (it has none): in the statistic's own units
    for name, test in report["test_stats"].items():
        sample = (report["sample_stats"] or {}).get(name) or {}
        distance = (report["stat_distance"] or {}).get(name)
        unscaled = distance is not None and test.get("std") == 0
        raw += [name] if unscaled else []
        shown = "" if distance is None else f"{distance:.3f}{'*' if unscaled else ''}"
        lines.append(f"{name:<22}{_mean_std(sample):>16}{_mean_std(test):>16}{shown:>10}")
    if raw:
        lines.append(
            f"* raw distance in the statistic's own units, not in {report['split']} standard deviations: "
            f"the split does not vary on it ({report['pieces']} piece(s)); compare it only with itself"
        )
    if report.get("gate"):
        lines.append(format_gate(report["gate"], report["split"]))
    return "\n".join(lines)


def format_positions(rows: list[dict[str, Any]]) -> str:
    """Bits/token by position in the context window, one row per bucket with its token count (a piece
    shorter than the context fills only the first positions)."""
    lines = [f"{'window positions':<22}{'tokens':>10}{'bits/token':>12}"]
    for row in rows:
        lines.append(
            f"{row['first']:>9}-{row['last']:<12}{row['tokens']:>10}{_number(row['bits_per_token']):>12}"
        )
    return "\n".join(lines)


def format_accompaniment(report: dict[str, Any]) -> str:
    """`eval --accompany-stats`: the model's part, the real part and the control side by side, per figure
    whether the model is closer to the real part than the control, and the verdict over the figures."""
    source = report.get("midi_dir") or report.get("split", "the split")
    given = report.get("given", "the other families")
    lines = [
        f"{report['family']} added to {report['scored']} of {report['pieces']} pieces of {source}, given "
        f"{given} (their first {report['seconds']:g} s; grid: {report['grid']})",
        f"{'figure':<18}{'model':>8}{'real':>8}{'control':>9}  model closer to real than control",
    ]
    control = report["control"] or {}
    for name, ours in report["model"].items():
        closer = {True: "yes", False: "no", None: "-"}[report["closer_than_control"][name]]
        lines.append(
            f"{name:<18}{_short(ours):>8}{_short(report['real'][name]):>8}{_short(control.get(name)):>9}"
            f"  {closer}"
        )
    busy = report["notes_per_second"]
    lines.append(
        f"{'notes per second':<18}{_short(busy['model']):>8}{_short(busy['real']):>8}"
        f"{_short(busy['control']):>9}  (how busy each part is; not a figure of listening)"
    )
    if report["control"] is None:
        lines.append("control: none (it needs two scored pieces)")
    else:
        lines.append(f"control: {report['control_part']}")
    verdict = report["closer_on_every_figure"]
    if verdict is not None:
        lines.append(
            f"the model's part is {'' if verdict else 'not '}closer to the real part than the control on "
            "every figure it has"
        )
    return "\n".join(lines)


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _mean_std(entry: dict[str, Any]) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:.3f}±{entry['std']:.3f}"


def format_gate(gate: dict[str, Any], split: str) -> str:
    """The gate as a table: one row per statistic, the split's mean, then each set's distance (samples,
    their per-composer distances, the held-out real pieces and the controls), and per set the statistics
    it fails."""
    sets: list[tuple[str, dict[str, float | None]]] = []
    if gate.get("samples"):
        sets.append(("samples", gate["samples"]["distance"]))
        for name, entry in gate["samples"]["by_composer"].items():
            sets.append((f"s:{name}"[:11], entry["distance"]))
    for name, entry in (gate.get("controls") or {}).items():
        sets.append((_SHORT.get(name, name)[:11], entry["distance"]))
    header = f"{'gate (distance in ' + split + ' std)':<26}{split + ' mean':>12}" + "".join(
        f"{name:>12}" for name, _ in sets
    )
    lines = [header]
    for stat, entry in gate["reference"].items():
        mean = "-" if entry["mean"] is None else f"{entry['mean']:.3f}"
        cells = "".join(f"{_number_short(d.get(stat)):>12}" for _, d in sets)
        lines.append(f"{stat:<26}{mean:>12}{cells}")
    fails = [("samples", gate["samples"])] if gate.get("samples") else []
    fails += list((gate.get("controls") or {}).items())
    for name, entry in fails:
        failed = entry["fails"]
        lines.append(f"{name} fails {len(failed)}: {', '.join(failed) if failed else 'none'}")
    return "\n".join(lines)


_SHORT = {
    "real_heldout": "real",
    "shuffled_pitch": "shuffled",
    "random_walk": "walk",
    "opening_then_random": "open+walk",
}


def _number_short(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
