"""hardware.py: the data-sheet peak lookup (known kinds, case, unknown kinds) and the HBM table.

MFU reporting and ahead-of-time compiles trust these figures; a wrong match (e.g. "TPU v5 lite" read as
"TPU v5p") would silently mis-state utilization."""

import pytest

from musenet_jax.hardware import HBM_GIB_PER_CHIP, PEAK_FLOPS_BY_KIND, data_sheet_peak


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("TPU v4", 275e12),
        ("TPU v5 lite", 197e12),
        ("TPU v5p", 459e12),
        ("TPU v6e", 918e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA A100-SXM4-40GB", 312e12),
        ("nvidia h200", 989e12),
    ],
)
def test_data_sheet_peak_known_kinds(kind, expected):
    assert data_sheet_peak(kind) == expected


@pytest.mark.parametrize("kind", ["cpu", "", "TPU v2", "NVIDIA GeForce RTX 3090"])
def test_data_sheet_peak_unknown_kind_is_none(kind):
    assert data_sheet_peak(kind) is None


def test_every_table_entry_matches_itself_first():
    """Each kind's own name finds its own figure: no earlier, shorter entry shadows a later one."""
    for name, flops in PEAK_FLOPS_BY_KIND:
        assert data_sheet_peak(name) == flops, name


def test_hbm_table_is_positive_gib():
    assert HBM_GIB_PER_CHIP and all(isinstance(v, int) and v > 0 for v in HBM_GIB_PER_CHIP.values())
