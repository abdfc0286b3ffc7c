"""The report: tables and figures of a finished run, written to ``reports/report.md``.

* :mod:`sdfm.report.document`: the tables and the document of the ``report`` rule;
* :mod:`sdfm.report.figures`: the shared style and the figure functions;
* :mod:`sdfm.report.superres`: the super-resolution section (panel and scores).
"""
