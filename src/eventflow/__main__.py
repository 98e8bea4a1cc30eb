from eventflow.cli import main

raise SystemExit(main())
