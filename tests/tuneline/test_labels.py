"""The classification task's label set: class ids, quarantine reasons, the one artifact check."""

import numpy as np
import pytest

from tuneline.params import ClassificationParams
from tuneline.tasks.labels import LabelError, LabelSet

LABELS = LabelSet.of(ClassificationParams(labels=["ham", "spam"]))


def test_ids_follow_the_params_order():
    assert LABELS.ids(["spam", "ham", "spam"], "x.parquet").tolist() == [1, 0, 1]
    assert LABELS.ids([], "x.parquet").dtype == np.int64
    assert LabelSet(("spam", "ham")).ids(["spam"], "x").tolist() == [0]


def test_an_unknown_label_names_the_file_the_labels_and_the_key():
    with pytest.raises(LabelError, match=r"val.parquet: labels \['eggs', 'phishing'\] are not in "
                                         r"classification.labels \['ham', 'spam'\]"):
        LABELS.ids(["ham", "phishing", "eggs", "phishing"], "val.parquet")


def test_require_accepts_the_same_set_in_order_only():
    LABELS.require(["ham", "spam"], "models/finetuned", "retrain")
    for other in (["spam", "ham"], ["ham"], ["ham", "spam", "phishing"]):
        with pytest.raises(LabelError, match=r"models/finetuned was made for labels .* but "
                                             r"classification.labels is \['ham', 'spam'\]; retrain"):
            LABELS.require(other, "models/finetuned", "retrain")


def test_membership_and_quarantine_reason():
    assert "ham" in LABELS and "eggs" not in LABELS and len(LABELS) == 2 and LABELS.list == ["ham", "spam"]
    assert LABELS.not_allowed("eggs") == "label 'eggs' not in classification.labels ['ham', 'spam']"
