"""Binds every feature file under features/ to pytest (pytest-bdd)."""

from pytest_bdd import scenarios

scenarios("operating", "troubleshooting", "business", "zh-CN")
