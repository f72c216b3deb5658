"""The example project under leaky_project/ is a suite of its own, run with
its own configuration (``cd examples/leaky_project && pytest``); a pytest run
over examples/ from the repository leaves it alone."""

collect_ignore = ["leaky_project"]
