"""A worker's log records go to the owner: the handler that sends them, and its install.

``_output.install_worker`` installs it when the worker starts if ``logging`` is loaded (a
forked worker), otherwise when something first imports ``logging`` (a spawned worker that
never logs never loads it). Records are sent through ``send`` as a dict of picklable
attributes; the owner rebuilds and handles them (``_output.deliver``).
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ._output import Settings

__all__ = ["install"]


# Attributes every LogRecord has; anything else came from ``extra=`` and may not pickle.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_formatter = logging.Formatter()


class _ForwardHandler(logging.Handler):
    """Sends each record to the owner; the owner's handlers format it."""

    def __init__(self, send: Callable[[dict[str, Any]], None], pid: int) -> None:
        super().__init__(logging.NOTSET)
        self._send = send
        self._pid = pid

    def emit(self, record: logging.LogRecord) -> None:
        if os.getpid() != self._pid:
            # A process forked by a task: the socket is not its to write. Say it on stderr
            # (the descriptor), as logging does when no handler is configured.
            if logging.lastResort is not None:
                logging.lastResort.handle(record)
            return
        try:
            self._send(_picklable(record))
        except Exception:
            self.handleError(record)


def _picklable(record: logging.LogRecord) -> dict[str, Any]:
    attrs = dict(record.__dict__)
    attrs["msg"] = record.getMessage()  # the args are formatted here, where they live
    attrs["args"] = None
    if record.exc_info:
        if not record.exc_text:
            attrs["exc_text"] = _formatter.formatException(record.exc_info)
        attrs["exc_info"] = None
    for key in attrs.keys() - _STANDARD:
        try:
            pickle.dumps(attrs[key])
        except Exception:
            attrs[key] = repr(attrs[key])
    return attrs


def install(send: Callable[[dict[str, Any]], None], settings: Settings, pid: int) -> None:
    """Every record a worker logs goes to the owner, once.

    Under fork the worker inherits the caller's handlers: they are dropped (the caller's own
    handlers handle the forwarded record). A logger that does not propagate gets the
    forwarding handler itself, since its records never reach the root.
    """
    handler = _ForwardHandler(send, pid)
    root = logging.getLogger()
    for existing in list(root.manager.loggerDict.values()):
        if isinstance(existing, logging.Logger) and existing.handlers:
            for old in list(existing.handlers):
                existing.removeHandler(old)
            if not existing.propagate:
                existing.addHandler(handler)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.root_level)
    for name, level in settings.levels:
        logging.getLogger(name).setLevel(level)
    logging.disable(settings.disable)
