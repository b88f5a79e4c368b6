import sys

from modelplane_testbed.emulator.process import main

sys.exit(main())
