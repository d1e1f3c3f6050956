"""Data: readers into the canonical layout, channels, statistics, training windows, synthetic planet."""
