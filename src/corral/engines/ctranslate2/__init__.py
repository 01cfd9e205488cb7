"""CTranslate2: Whisper models through faster-whisper (transcribe)."""
