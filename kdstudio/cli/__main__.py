from kdstudio.cli.commands import main

raise SystemExit(main())
