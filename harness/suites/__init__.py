"""What a suite declares and the data it reads: the suite schema, preference pairs, the synthetic review generator."""
