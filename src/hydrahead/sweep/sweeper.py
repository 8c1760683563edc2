"""``hydra/sweeper=hydrahead``: Hydra's basic sweeper, checking each batch with the fast composer.

Before it launches a batch, Hydra's BasicSweeper composes every job of it in full
(``validate_batch_is_legal``, so that a bad override fails before any job starts): as much time per
job as Hydra's launchers spend. :class:`FastBatchCheck` makes the same check through a
:class:`~hydrahead.sweep.launchers.JobComposer` (the same configs, the same errors), the
in-process launcher's own when it runs under one, so the check reuses the launcher's compositions.

The sweeper itself is ``hydra_plugins.hydrahead_launchers.GridSweeper``: this mixin over the
BasicSweeper that Hydra's plugin scan has just registered (the scan runs plugin modules again,
and a subclass of an older BasicSweeper would break its ``super()`` calls).
"""

from __future__ import annotations

from collections.abc import Sequence

from .launchers import JobComposer


class FastBatchCheck:
    """``validate_batch_is_legal`` through a JobComposer; mixed in before Hydra's BasicSweeper."""

    _composer: JobComposer | None = None

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        composer = getattr(self.launcher, "composer", None)
        if composer is None:
            if self._composer is None:
                self._composer = JobComposer(self.hydra_context.config_loader, self.config)
            composer = self._composer
        for overrides in batch:
            composer.load(overrides)  # raises what load_sweep_config raises
