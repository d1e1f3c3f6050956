import sys

from appa_engine.cli import main

sys.exit(main())
