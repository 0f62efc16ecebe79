"""Helpers shared by relay's tests: configs, signed bodies, running apps."""
