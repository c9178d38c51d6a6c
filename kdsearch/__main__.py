import sys

from kdsearch.cli import main

sys.exit(main())
