"""Renderers: each reads a CostReport and computes nothing but layout."""
