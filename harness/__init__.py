"""prefbench core: suites, training plumbing, sampling, judging, evaluation, results, analysis, CLI."""
