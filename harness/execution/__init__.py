"""Turning a request into runs: the plan, the algorithm-facing context, the runner, the results store and the shared suite artifacts."""
