"""`python -m swinseg` runs the command line."""
from swinseg.cli import main

main()
