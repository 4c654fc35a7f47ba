"""Evaluation on arrays of features: linear probes per layer, representational similarity (CKA). Knows no engine."""
import numpy as np

from ..errors import ProtocolError
from .layers import chosen_layers, probe_layers
from .probe import kfold_probe, linear_probe, pool_glimpses, stratified_folds, stratified_split
from .similarity import correlation, linear_cka

__all__ = ["check_folds", "check_split", "chosen_layers", "correlation", "kfold_probe", "linear_cka", "linear_probe",
           "pool_glimpses", "probe_layers", "stratified_folds", "stratified_split"]


def check_folds(source: str, folds: int, labels, train, test) -> None:
    """Refuse ``[evaluate] folds`` larger than the smallest class of the samples the probe cross-validates.

    Stratified folds hold out part of every class in every fold, so no class may have fewer samples than
    there are folds. The bound needs the data, so it is checked here rather than with the protocol.
    Raises :class:`~neuroplastic.errors.ProtocolError` naming the key, the counts and the allowed values.
    """
    if folds == 0:
        return
    labels = np.asarray(labels)[np.union1d(train, test).astype(np.int64)]
    classes, sizes = np.unique(labels, return_counts=True)
    if len(classes) and folds <= sizes.min():
        return
    smallest = int(sizes.min()) if len(sizes) else 0
    allowed = f"0 or 2 to {smallest}" if smallest >= 2 else "0"
    raise ProtocolError(source, "evaluate.folds",
                        f"= {folds}: the probe's data has {len(labels)} samples in {len(classes)} classes, the "
                        f"smallest with {smallest}, and every fold needs a sample of each class; allowed: {allowed}")


def check_split(source: str, test_fraction: float, labels, train, test) -> None:
    """Refuse a probe split (``[data] test_fraction``) that leaves a side the probe cannot use.

    The probe is fitted on ``train`` (which the encoder also learns from) and scored on ``test``:
    the fit needs at least two samples of each of at least two classes, the score at least one
    sample. Raises :class:`~neuroplastic.errors.ProtocolError` naming the key, the counts and what to change.
    """
    labels = np.asarray(labels)
    known = labels >= 0
    classes, sizes = np.unique(labels[known], return_counts=True)
    fit = labels[np.asarray(train, dtype=np.int64)]
    train_counts = np.unique(fit[fit >= 0], return_counts=True)[1]
    n_train, n_test = int(len(train)), int(len(test))
    fit_classes = int(np.sum(train_counts >= 2))
    counts = f"{n_train} training and {n_test} test samples of {len(labels)} in {len(classes)} classes"
    if n_test == 0:
        need = 0.5 / max(int(sizes.max()), 1) if len(sizes) else 0.5
        raise ProtocolError(source, "data.test_fraction",
                            f"= {test_fraction:g}: leaves {counts}, so the probe has nothing to be tested on "
                            f"(each class holds out round(its size x test_fraction) samples); raise it above "
                            f"{need:.2g} (0.5 is usual)")
    if fit_classes < 2:
        raise ProtocolError(source, "data.test_fraction",
                            f"= {test_fraction:g}: leaves {counts}, so the encoder has "
                            f"{'nothing' if n_train == 0 else 'almost nothing'} to learn from and the probe fewer "
                            "than two classes with two samples each to fit; lower it (0.5 is usual)")
