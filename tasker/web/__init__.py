"""The web dashboard, `tasker web`: pages, JSON API and actions over `tasker.admin`.

Needs the `web` extra (`pip install "tasker[web]"`); importing this package
alone does not, so the CLI can say what is missing.
"""
