"""Would run at the start of every Python process that has this folder on its path at start-up (PYTHONPATH). The
scorer never puts it there, so this must never run: if it does, the process dies with exit code 86 and says so,
and the step it was in fails."""

import os
import sys

print("the evil plugin's sitecustomize ran", file=sys.stderr)
os._exit(86)
