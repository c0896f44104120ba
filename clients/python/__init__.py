"""The Python client of livecanvas: ``connect`` opens a session, iterating it yields server messages.

    from clients.python import DraftMsg, Ended, FinalMsg, connect

    async with connect("ws://127.0.0.1:8765", stream="talk", role="subscribe", tracks=("caption", "pt")) as s:
        async for update in s:
            if isinstance(update, DraftMsg | FinalMsg):
                print(update.TYPE, update.track, update.window, update.text)
            elif isinstance(update, Ended):  # after the stream's last final: the transcript is complete
                break

``client`` holds the async client, ``send`` the ``livecanvas send`` command, ``render`` its terminal
views and ``audio_source`` WAV and microphone input.
"""

from clients.python.client import CaptionSession, Received, connect
from stream.wire.messages import (
    Bye,
    DraftMsg,
    Ended,
    ErrorMsg,
    FinalMsg,
    Ready,
    Role,
    ServerMessage,
    StatsMsg,
)

__all__ = [
    "Bye",
    "CaptionSession",
    "DraftMsg",
    "Ended",
    "ErrorMsg",
    "FinalMsg",
    "Ready",
    "Received",
    "Role",
    "ServerMessage",
    "StatsMsg",
    "connect",
]
