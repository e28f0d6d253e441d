"""Checks of the toolkit on models larger than one device and on a Ray cluster."""
