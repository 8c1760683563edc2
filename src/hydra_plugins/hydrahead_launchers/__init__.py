"""hydrahead's Hydra launchers and sweeper; the code is in :mod:`hydrahead.sweep`.

Hydra instantiates a launcher or sweeper only when its class lives under the ``hydra_plugins``
namespace package and its plugin scan found it there: these subclasses are the names the configs
point at.
"""

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper as _BasicSweeper

from hydrahead.sweep import launchers as _launchers
from hydrahead.sweep import sweeper as _sweeper


class HydraheadLauncher(_launchers.InProcessLauncher):
    """``hydra/launcher=hydrahead``, the default for ``hydrahead-train -m``."""


class ChunkedLocalLauncher(_launchers.ChunkedLocalLauncher):
    """``hydra/launcher=local``."""


class ChunkedSlurmLauncher(_launchers.ChunkedSlurmLauncher):
    """``hydra/launcher=slurm``."""


class GridSweeper(_sweeper.FastBatchCheck, _BasicSweeper):
    """``hydra/sweeper=hydrahead``: Hydra's basic sweeper (cartesian product, ``max_batch_size``,
    ``params``), checking each batch with the fast composer."""
