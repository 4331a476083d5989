"""The recognizer service; README.md says what it serves and stores."""
