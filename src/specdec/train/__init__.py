"""Draft-head data generation, training, import and export."""
