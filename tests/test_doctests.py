"""The examples in tcp_lld's docstrings are tests too."""

import doctest
import importlib
import pkgutil

import pytest

import tcp_lld

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(tcp_lld.__path__, "tcp_lld.") if info.name != "tcp_lld.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    failed, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert failed == 0


def test_the_examples_exist():
    attempted = sum(doctest.testmod(importlib.import_module(name)).attempted for name in MODULES)
    assert attempted >= 5
