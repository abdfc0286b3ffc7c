"""The report: tables and figures of a finished run, written to ``reports/report.md``.

* :mod:`sdfm.report.document`: the document of the ``report`` rule (its sections, in order);
* :mod:`sdfm.report.tables`: its tables (paper tables, epsilon and guidance studies, cost, pairing);
* :mod:`sdfm.report.style`: the shared style (method colours, labels, rcParams, saving);
* :mod:`sdfm.report.figures`: the metric figures (and every figure function, re-exported);
* :mod:`sdfm.report.run_figures`: the figures of the runs (cost, trajectories, sample grids);
* :mod:`sdfm.report.superres`: the super-resolution section (panel and scores).
"""
