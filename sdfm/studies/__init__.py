"""Studies beyond the main FM / OT-FM / SD-FM grid, one module (plus its report) per study.

A study is configured by its ``studies.<name>`` key, runs through its own rules in
``workflow/rules/studies/<name>.smk`` and writes its figure and report section under ``reports/``:

* :mod:`sdfm.studies.convergence` (+ :mod:`sdfm.studies.convergence_report`): chi^2 of the
  potential vs solver steps, against the theory's rate;
* :mod:`sdfm.studies.pca` (+ :mod:`sdfm.studies.pca_report`): potentials fitted in a k-dim PCA
  subspace, their pairing quality and speed;
* :mod:`sdfm.studies.adaptive_epsilon`: epsilon ``auto`` against the fixed epsilons.
"""
