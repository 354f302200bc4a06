"""Functions and types the surface tests run in child processes (importable by every start
method)."""

from __future__ import annotations

from typing import Any


class Token:
    """An object that pickles only through a reducer registered with ``reduction.register``."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> Any:
        raise TypeError("a Token pickles only through its registered reducer")


def rebuild_token(value: int) -> Token:
    return Token(value + 1)  # +1: the registered reducer was used


def reduce_token(token: Token) -> tuple[Any, tuple[int]]:
    return rebuild_token, (token.value,)


def report_token(queue: Any, token: Token) -> None:
    queue.put(token.value)
