from mtlib.cli import main

raise SystemExit(main())
