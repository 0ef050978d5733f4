# Importing the cli imports aniportraitgan.commands first, which sets OMP_WAIT_POLICY=PASSIVE
# (unless already set) before torch loads: see aniportraitgan/commands/__init__.py.
from aniportraitgan.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
