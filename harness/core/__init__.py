"""Small things every group uses: config dataclasses, hashing, errors, environment facts, fault points, progress bars, seeds, and the statistics library."""
