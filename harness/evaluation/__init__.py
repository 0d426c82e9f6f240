"""The one evaluation every policy gets: sampling, judging, KL and the run's metrics."""
