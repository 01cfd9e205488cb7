"""eSpeak NG: the handler that speaks through the espeak-ng program (one process per request)."""
