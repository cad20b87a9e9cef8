"""Repository root marker: pytest puts this folder on sys.path, so the packages
import the same way under `pytest` and `python -m pytest`, installed or not."""
