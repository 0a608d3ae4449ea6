import sys

from ..cli.data import main

sys.exit(main())
