"""``python -m patchrefinenet ...`` = the ``patchrefinenet`` command (:mod:`patchrefinenet.cli.app`)."""
from patchrefinenet.cli.app import main

main()
