"""Observations: observers as data, differentiable observation operators, scenario files."""
