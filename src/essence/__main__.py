import sys

from essence.cli import main

sys.exit(main())
