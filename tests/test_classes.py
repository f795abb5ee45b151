"""Naming classes (graphconv.classes): by index or label, in comma-separated lists."""
import pytest

from graphconv.classes import rejoined_names

BIGEARTHNET = ["Urban fabric", "Moors, heathland and sclerophyllous vegetation", "Water bodies",
               "Land principally occupied by agriculture, with significant areas of natural vegetation"]


@pytest.mark.parametrize("names, expected", [
    (["Moors", "heathland and sclerophyllous vegetation"], ["Moors, heathland and sclerophyllous vegetation"]),
    (["water bodies", "moors", "HEATHLAND AND SCLEROPHYLLOUS VEGETATION", 0],  # as typed: case is matched later
     ["water bodies", "moors, HEATHLAND AND SCLEROPHYLLOUS VEGETATION", 0]),
    (["Land principally occupied by agriculture", "with significant areas of natural vegetation", "Urban fabric"],
     [BIGEARTHNET[3], "Urban fabric"]),
    (["Moors", 2], ["Moors", 2]),  # no label is 'Moors, 2': left for class_index to refuse
    (["Urban fabric", "Water bodies"], ["Urban fabric", "Water bodies"]),
])
def test_names_holding_a_comma_are_put_back_together(names, expected):
    """BigEarthNet's labels hold commas, which a --classes or --top-class list split: the
    error then suggested the whole name, which no list could carry."""
    assert rejoined_names(names, BIGEARTHNET) == expected
    assert rejoined_names(names, None) == names


def test_run_classes_takes_a_name_holding_a_comma():
    import argparse
    from graphconv.cli import resolve_class_names
    args = argparse.Namespace(heatmap=None, classes=["Water bodies", "Land principally occupied by agriculture",
                                                     "with significant areas of natural vegetation"])
    resolve_class_names(args, BIGEARTHNET)
    assert args.classes == [2, 3]
