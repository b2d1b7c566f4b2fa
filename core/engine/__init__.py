"""Shared machinery of the attribution methods: per-sample gradients, random projections, inverse-Hessian solvers."""
