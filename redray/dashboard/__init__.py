"""redray's dashboard: a small web page that shows a cluster's state, live.

``redray dashboard --address URL`` (and ``redray start --head``) serves it.
One module per concern: ``reader.py`` keeps the dashboard's one driver
connection and serializes reads through it; ``endpoints.py`` turns the state
API (``redray.util.state``, the same functions as ``redray list``) into the
JSON that each panel reads; ``server.py`` is the HTTP server (the standard
library's ``ThreadingHTTPServer``), its access control and security headers;
``launch.py`` starts it as a background process (``redray start --head``,
``init(include_dashboard=True)``); ``static/`` holds the page (one HTML
file, one script, one style sheet).
"""
