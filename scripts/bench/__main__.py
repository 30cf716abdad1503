"""``python scripts/bench [flags]``: Python runs this folder's __main__; the folder above goes on the path so that
the package imports as ``bench``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cli import main  # noqa: E402

sys.exit(main())
