"""``python -m mdm_prime.experiments STUDY``: the same as ``mdm-prime experiment STUDY``
(:mod:`mdm_prime.cli.experiment`)."""

import sys

from ..cli.experiment import main

if __name__ == "__main__":
    sys.exit(main())
