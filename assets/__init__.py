"""Embedded data sets (small, balanced subsets of MNIST, Fashion-MNIST, CIFAR-10 and AG News).

Installed with the package so the app and the tests work without a download; see
README.md beside this file for their provenance, checksums and licences.
"""
