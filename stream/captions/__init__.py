"""Caption cue formats shared by the server (``/captions``) and the broadcast clients: cue timing
(cues.py), SRT (srt.py) and WebVTT with HLS segments (webvtt.py)."""
