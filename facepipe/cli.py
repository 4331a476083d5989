def main() -> None:
    raise SystemExit("facepipe CLI not built yet")
