"""SIGINT/SIGTERM during training: finish the step, save a checkpoint, stop with one line.

:class:`StopSignals` turns the first signal into a flag that the training loop reads after each step
(it then saves and raises :class:`~mdm_prime.run_folder.RunInterrupted`, exit code ``128 + signal``);
a second signal acts as usual (the handler that was installed before).
"""

from __future__ import annotations

import signal
import threading

from .run_folder import RunInterrupted

__all__ = ["StopSignals", "interrupted"]


def interrupted(signum: int, when: str) -> RunInterrupted:
    """``RunInterrupted("stopped by SIGNAME <when>")``: the one line the command prints."""
    return RunInterrupted(f"stopped by {signal.Signals(signum).name} {when}", signum)


class StopSignals:
    """Context manager: while active, SIGINT/SIGTERM record :attr:`signum` instead of interrupting, and
    put the previous handler back so that a second signal acts as usual; every handler is restored on
    exit. Off the main thread (where Python cannot catch signals) it does nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def agreed(self, dist) -> int | None:
        """The signal, if any process caught one (the largest number over the process group, so every
        process stops at the same step), else None."""
        flag = self.signum or 0
        if dist.enabled:
            import torch

            t = torch.tensor(float(flag), device=dist.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            flag = int(t.item())
        return flag or None

    def raise_if_caught(self, when: str) -> None:
        """Raise :func:`interrupted` ``(signum, when)`` if this process caught a signal."""
        if self.signum:
            raise interrupted(self.signum, when)
