"""The RTP plane: sessions, G.711, the shared media clock, prompts, DTMF, bridge, recorder, TTS.

This package never imports ``switch`` or ``control_api``.
"""
