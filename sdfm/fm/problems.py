"""The potential problem of a data set under each conditioning mode: plain, class labels, super-resolution.

The fit-potential job fits it and the train job pairs against its keys, so both build it here
from the prepared data set and the data set's config entry (``conditional``, ``superres``). A new
conditioning mode adds its branch here, its condition math beside :mod:`sdfm.fm.superres`, and its
config keys to the schema.
"""

from __future__ import annotations

from sdfm.data import DataError, Dataset
from sdfm.fm.superres import superres_problem
from sdfm.ot.problem import PotentialProblem, class_conditional_problem, plain_problem

__all__ = ["potential_problem"]


def potential_problem(data: Dataset, dataset: str, conditional: dict | None = None,
                      superres: dict | None = None) -> PotentialProblem:
    """The problem of data set ``dataset`` (its name, for messages) under its config's conditioning.

    Plain: the flat training points, queries from N(0, I). ``conditional = {"beta": beta}``: keys
    ``[y_j, sqrt(beta) e_{z_j}]`` (:func:`sdfm.ot.problem.class_conditional_problem`).
    ``superres = {"factor": f, "beta": beta}``: keys ``[y_j, sqrt(beta) avgpool_f(y_j)]``
    (:func:`sdfm.fm.superres.superres_problem`).
    """
    if conditional:
        if data.num_classes is None:
            raise DataError(f"data set {dataset!r} has no labels: remove 'conditional' from its config entry")
        return class_conditional_problem(data.flat_train(), data.train_labels, data.num_classes, conditional)
    if superres:
        return superres_problem(data, dataset, superres)
    return plain_problem(data.flat_train())
