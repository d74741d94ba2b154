"""The applications of videohpm: the command-line scripts (`python tools/<name>.py`) and their
orchestration in :mod:`tools.lib`. Not part of the installed package (`setup.py` ships only
`videohpm`); run them from a checkout.
"""
