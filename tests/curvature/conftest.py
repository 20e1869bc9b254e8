"""Fixtures: the small MLP and data of curv_reference."""
import pytest

from curv_reference import classification_data, small_mlp


@pytest.fixture
def mlp():
    return small_mlp()


@pytest.fixture
def cdata():
    return classification_data()
