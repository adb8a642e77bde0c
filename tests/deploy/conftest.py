"""Fixtures for the deployment tests (helpers: deploy_support.py; a module named conftest is
not imported by the tests, since every test folder has one)."""

import pytest

from deploy_support import Board


@pytest.fixture
def board(tmp_path):
    b = Board(tmp_path)
    yield b
    b.close()


@pytest.fixture
def board_factory(tmp_path):
    made = []

    def start(**kw):
        b = Board(tmp_path / ("b%d" % len(made)), **kw)
        made.append(b)
        return b

    yield start
    for b in made:
        b.close()
