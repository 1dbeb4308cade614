"""``wham-gym serve``: a dream server speaking WHAM's ``run_server.py`` protocol, plus remote RL sessions.

Modules, one job each:
  protocol   the wire format (parse a new_job form, build a results zip); no HTTP, no threads
  sessions   jobs and RL sessions as streams, the table holding them, limits and expiry
  scheduler  the one thread that batches every due stream into one DreamEngine step
  app        the Starlette routes over those
  server     uvicorn: foreground, or a background thread on a free port
  client     a protocol client and a Gymnasium env over the session routes (needs only httpx)

Import the module you need (``from wham_gym.serve.app import DreamServer``); this package
imports nothing itself, so the client does not pull in the server's dependencies.
"""
