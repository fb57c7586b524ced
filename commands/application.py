"""The event-sourced application: one log for every aggregate (so projections
follow one order, and a delivery record is saved with the events it caused),
with the commands engineering runs directly mixed in (commands/tokens.py,
commands/directory.py). The operations' commands go through the group committer
(commands/group_commit.py) and their handlers (commands/handlers.py)."""

from eventsourcing.persistence import Transcoder

from commands.directory import CommunityRow, DirectoryCommands, ImportReport, PersonRow
from commands.sealing import SigningKeys
from commands.tokens import TokenCommands, TokenError
from commands.transcoder import OrjsonTranscoder

__all__ = ["CommunityRow", "ImportReport", "OpsApplication", "PersonRow", "TokenError"]


class OpsApplication(TokenCommands, DirectoryCommands):
    name = "PmOps"

    def __init__(
        self, env: dict[str, str] | None = None, signing_keys: SigningKeys | None = None
    ) -> None:
        super().__init__(env)
        self.signing_keys = signing_keys or SigningKeys(None)

    def construct_transcoder(self) -> Transcoder:
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder
