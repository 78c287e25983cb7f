"""Tools built on the plugin and driven by the command line: corpus converters
(``corpora``), the showcase and displaCy output (``display``), and the measurement
tooling: training benchmarks (``benchmark``), the benchmarks of ``annotate`` and
``serve`` (``annotate_benchmark``, ``serve_benchmark``), reports and scoring
(``report``, ``scoring``). Nothing in the plugin core imports them."""
