"""Speed benchmarks, one script per paper (run as `python benchmarks/<paper>.py`); shared timing tools."""
