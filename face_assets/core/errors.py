"""The one base class of every error a user can act on: its message is the whole story, one
line naming the file, row, folder or setting and what to do; the command line prints it and
exits 2, without a traceback unless asked for one (-v)."""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what is wrong and what to do about it."""
