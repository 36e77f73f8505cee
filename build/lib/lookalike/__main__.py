from lookalike.cli.main import main

raise SystemExit(main())
