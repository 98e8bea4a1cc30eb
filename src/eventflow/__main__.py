from eventflow.cli import main

if __name__ == "__main__":  # not when a child process re-imports it (spawn)
    raise SystemExit(main())
