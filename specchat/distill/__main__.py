import sys

from specchat.distill import main

sys.exit(main())
