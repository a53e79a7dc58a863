"""`attune studio`: the local web app over the rest of attune.

    settings.py   what the studio serves (runs and data roots, bind address, token)
    security.py   the token, loopback-only hosts, and paths kept inside the runs / data roots
    runs_view.py  the runs under --runs: status, progress, metrics (read and streamed as they grow)
    jobs.py       training and compare as separate processes (start, stop with a checkpoint, resume)
    recipes.py    recipes: builtin and saved ones, validation as `attune recipe check`, the form
    data_view.py  a data file: `attune data check` and `data inspect` as page data, lengths
    arena.py      two candidates answer one prompt; votes become preference pairs; win rates
    advise_view.py  the advisor's questions as a form, a recommendation as a draft recipe
    app.py        the FastAPI app: pages (Jinja2, server-rendered) and JSON / SSE endpoints
    commands.py   `attune studio`

Nothing below this package imports it; it calls the packages below and re-implements none of them.
"""
