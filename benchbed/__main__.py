import sys

from benchbed.cli import main

sys.exit(main())
