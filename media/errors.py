"""Errors raised by the media plane.

The switch maps :class:`SdpError` to ``488 Not Acceptable Here``; the control API maps
:class:`PlayFileError` and :class:`TemplateError` to ``1010002`` with the message as reason.
"""

from __future__ import annotations


class MediaError(Exception):
    """Base class of every error the media plane raises on purpose."""


class SdpError(MediaError, ValueError):
    """A session description we cannot parse or cannot accept (answer 488)."""


class PlayFileError(MediaError, ValueError):
    """A prompt file that does not meet PR-FILE; the message is the human reason."""


class TemplateError(MediaError, ValueError):
    """A TTS template or parameter list that breaks TPL-1/TPL-2; the message names the problem."""


class TtsError(MediaError):
    """espeak-ng or sox failed or timed out while rendering speech."""


class PortPoolExhausted(MediaError):
    """No free RTP/RTCP port pair left in ``[media] rtp_ports``."""
