from forge_ci.cli import main

raise SystemExit(main())
