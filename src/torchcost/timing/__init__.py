"""How long a model takes: measured on its own device (measure.py), predicted for named hardware."""
