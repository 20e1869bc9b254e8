"""Fixtures for the training tests."""
import pytest

from train_helpers import make_linreg, make_logreg


@pytest.fixture
def linreg():
    return make_linreg()


@pytest.fixture
def logreg():
    return make_logreg()
