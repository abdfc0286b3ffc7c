"""sdfm: a benchmark harness for flow matching with semidiscrete, batch-OT and independent couplings."""

__version__ = "0.1.0"
