"""Flow matching: pair samplers, objectives, the training loop, ODE sampling, super-resolution conditions.

The flow-matching library sits beside :mod:`sdfm.ot`, :mod:`sdfm.data`, :mod:`sdfm.models` and
:mod:`sdfm.metrics` and imports only them (and :mod:`sdfm.io`, :mod:`sdfm.errors`):

* :mod:`sdfm.fm.couplings`: how each method draws training pairs (FM, OT-FM, SD-FM);
* :mod:`sdfm.fm.objectives`: the flow-matching and MeanFlow losses;
* :mod:`sdfm.fm.train`: the training loop (EMA, checkpoints, resume);
* :mod:`sdfm.fm.sampling`: ODE solvers, guidance and MeanFlow sampling;
* :mod:`sdfm.fm.superres`: the super-resolution condition (low-resolution image) and its sampler.
"""
