"""A run's log on its way from the runner to its readers: the writer that stores and
publishes it (`writer`), the live fan-out (`hub`), and following it (`follow`)."""
