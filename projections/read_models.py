"""The read side in one handle: a typed view per read model, over one store.

The CLI, `verify` and the auditors' web page read through these views only; the
SQL behind them lives in the read model's own module."""

from dataclasses import dataclass
from typing import Any

from commands.store import Store
from projections.activity import ActivityProjection
from projections.audit import AuditProjection, AuditView
from projections.bluegreen import rebuild_running
from projections.chain import ChainProjection, ChainView
from projections.checkpoints import TreeProjection, TreeView
from projections.history import HistoryView
from projections.projection import TableProjection
from projections.state import StateProjection, StateView
from projections.store import ViewsMixin, open_views

DB_PROJECTIONS: dict[str, type[TableProjection]] = {
    "state": StateProjection,
    "audit": AuditProjection,
    "chain": ChainProjection,
    "activity": ActivityProjection,
    "checkpoints": TreeProjection,
}


@dataclass(frozen=True)
class ReadModels:
    app: Any
    views: ViewsMixin
    state: StateView
    audit: AuditView
    chain: ChainView
    history: HistoryView
    tree: TreeView

    def projection(self, name: str) -> TableProjection:
        return DB_PROJECTIONS[name](self.app, self.views)

    def head(self) -> int:
        return self.app.recorder.max_notification_id() or 0

    def notice(self, name: str) -> str | None:
        """What a reader of this projection should know: a rebuild is in progress
        (readers keep the live tables until it swaps its own in), it awaits a rebuild
        for this release, or it is behind the log. None when it is current."""
        projection = self.projection(name)
        if rebuild_running(self.views, name):
            return (
                f"the {name} projection: a rebuild is in progress; you are reading the model "
                f"as of position {projection.position()}"
            )
        if projection.upgrade_pending():
            return (
                f"the {name} projection is from an earlier release and will be rebuilt from "
                "the log when `pm-ops projections run` (or `pm-ops serve`) starts; until then "
                "it shows what the earlier release built"
            )
        lag = self.head() - projection.position()
        if lag > 0:
            return (
                f"the {name} projection is {lag} event(s) behind the log "
                "(is `pm-ops projections run` or `pm-ops serve` running?)"
            )
        return None


def open_read_models(app: Any, store: Store) -> ReadModels:
    """The views over the application's datastore, with their tables created."""
    views = open_views(app, store)
    for projection in DB_PROJECTIONS.values():
        projection(app, views).create()
    return ReadModels(
        app,
        views,
        StateView(views),
        AuditView(views),
        ChainView(views),
        HistoryView(app),
        TreeView(views),
    )
