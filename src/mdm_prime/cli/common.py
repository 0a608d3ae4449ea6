"""Shared pieces of the commands: the help formatter."""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default in its help, except where there is nothing to show: flags
    (``store_true``), ``None`` defaults (the help says where the value comes from), and help texts
    that already state their default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default is None
            or isinstance(action.default, bool)
            or "default" in text
            or action.default is argparse.SUPPRESS
            or action.default == []
        ):
            return text
        return super()._get_help_string(action)
