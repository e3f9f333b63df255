"""``ditaccel tune``: the best method setting for the user's model, inputs and device, measured.

:mod:`.candidates` proposes what applies to the pipeline, :mod:`.search` keeps the front's
neighbourhood by successive halving, :mod:`.run` measures with the bench's code (resumable through
:mod:`.store`), :mod:`.report` writes ``front.json``, the front plot and the image grid.
"""

from .run import TuneConfig, TuneResult, run_tune, tune
from .search import Goal

__all__ = ["Goal", "TuneConfig", "TuneResult", "run_tune", "tune"]
